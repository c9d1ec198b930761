//! Throughput of `resolve` + `MemoryGraph::apply` on a synthetic signal stream, against a bare
//! hash map doing one look-up (or insert) per identifier over the same stream, measured in the
//! same run. Run with `cargo bench -p idgraph-core --bench resolve`.
//!
//! The stream is `idgraph_workload::StreamConfig::standard()`: 1M signals over 200k persons with
//! identity churn (anonymous → email → user id, new devices that merge on login, ~5% merging).
//! Values are normalized before timing starts.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::resolve::memory::MemoryGraph;
use idgraph_core::resolve::{Signal, resolve};
use idgraph_workload::{SignalStream, StreamConfig};
use jiff::Timestamp;

const RUNS: usize = 3;
const SIGNALS: usize = StreamConfig::standard().signals;
const PERSONS: u64 = StreamConfig::standard().persons;

/// All signals' identifiers back to back; signal `i` is `identifiers[ends[i - 1]..ends[i]]`.
struct Stream {
    identifiers: Vec<Identifier>,
    ends: Vec<usize>,
}

impl Stream {
    fn signals(&self) -> impl Iterator<Item = &[Identifier]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.identifiers[start..end])
    }
}

fn generate(settings: &IdentitySettings) -> Stream {
    let config = StreamConfig::standard();
    let mut stream = Stream {
        identifiers: Vec::with_capacity(config.signals * 2),
        ends: Vec::with_capacity(config.signals),
    };
    for signal in SignalStream::new(config) {
        for (kind, raw) in signal.identifiers() {
            let identifier = settings
                .normalize(kind, raw)
                .expect("generated values are valid");
            stream.identifiers.push(identifier);
        }
        stream.ends.push(stream.identifiers.len());
    }
    stream
}

struct Outcome {
    elapsed: Duration,
    persons: usize,
    merges: u64,
    identifiers: usize,
    conflicts: usize,
    created: usize,
}

fn run_resolve(settings: &IdentitySettings, stream: &Stream) -> Outcome {
    // Callers derive new person ids from signal ids; derive them before the clock starts.
    let signals = stream.ends.len();
    let mut new_ids: Vec<String> = (0..signals).map(|i| format!("p{i:07}")).collect();
    let mut graph = MemoryGraph::for_settings(settings);
    let (mut conflicts, mut created) = (0, 0);
    let start = Instant::now();
    for (i, identifiers) in stream.signals().enumerate() {
        let at = Timestamp::from_second(i as i64).expect("in range");
        let signal = Signal {
            identifiers,
            new_person_id: std::mem::take(&mut new_ids[i]),
            at,
        };
        let resolution = resolve(settings, &graph, &signal);
        graph.apply(&resolution, at);
        conflicts += resolution.conflicts.len();
        created += usize::from(resolution.created);
    }
    let elapsed = start.elapsed();
    Outcome {
        elapsed,
        persons: graph.person_count(),
        merges: graph.merge_count(),
        identifiers: graph.identifier_count(),
        conflicts,
        created,
    }
}

fn run_baseline<H: std::hash::BuildHasher + Default>(stream: &Stream) -> (Duration, u64) {
    let mut map: HashMap<Identifier, u64, H> = HashMap::default();
    let mut next = 0u64;
    let mut checksum = 0u64;
    let start = Instant::now();
    for identifiers in stream.signals() {
        for identifier in identifiers {
            match map.get(identifier) {
                Some(person) => checksum ^= person,
                None => {
                    map.insert(identifier.clone(), next);
                    next += 1;
                }
            }
        }
    }
    (start.elapsed(), checksum ^ map.len() as u64)
}

/// The same multiply-fold hash `MemoryGraph` uses internally, for a like-for-like baseline.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word) ^ ((chunk.len() as u64) << 59));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let product = u128::from(self.0 ^ value ^ 0x243f_6a88_85a3_08d3)
            * u128::from(0x9e37_79b9_7f4a_7c15_u64);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn row(what: &str, runs: &[Duration]) {
    let median = median(runs.to_vec());
    let rate = SIGNALS as f64 / median.as_secs_f64();
    let all: Vec<String> = runs
        .iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
        .collect();
    println!(
        "| {what:<46} | {:>6.0} | {:>10.0} | {:>9.0} | {:>18} |",
        median.as_secs_f64() * 1e3,
        rate,
        median.as_secs_f64() * 1e9 / SIGNALS as f64,
        all.join(" / ")
    );
}

/// Set in a child process to the one measurement it makes.
const CHILD_VAR: &str = "IDGRAPH_BENCH_RUN";
const VARIANTS: [(&str, &str); 3] = [
    ("resolve", "resolve + apply into MemoryGraph"),
    ("sip", "baseline: HashMap<Identifier, u64>, SipHash"),
    ("fast", "baseline: HashMap<Identifier, u64>, fast hash"),
];

/// Measures one variant and prints `elapsed_ns` and the variant's counters on one line.
fn child(variant: &str) {
    let settings = IdentitySettings::default();
    let generating = Instant::now();
    let stream = generate(&settings);
    let generated_in = generating.elapsed().as_secs_f64();
    let line = match variant {
        "resolve" => {
            let o = run_resolve(&settings, &stream);
            format!(
                "{} {} {} {} {} {}",
                o.elapsed.as_nanos(),
                o.persons,
                o.merges,
                o.created,
                o.identifiers,
                o.conflicts
            )
        }
        "sip" => {
            let (elapsed, checksum) = run_baseline::<std::hash::RandomState>(&stream);
            format!("{} {}", elapsed.as_nanos(), std::hint::black_box(checksum))
        }
        _ => {
            let (elapsed, checksum) = run_baseline::<BuildHasherDefault<FastHasher>>(&stream);
            format!("{} {}", elapsed.as_nanos(), std::hint::black_box(checksum))
        }
    };
    println!("{line} {} {generated_in:.2}", stream.identifiers.len());
}

fn main() {
    if let Ok(variant) = std::env::var(CHILD_VAR) {
        return child(&variant);
    }
    // Each measurement runs in a fresh process: after a large graph is dropped, the allocator's
    // fragmented heap slows the next run by up to half, which would make the order of runs
    // matter more than the code.
    let exe = std::env::current_exe().expect("the bench knows its own path");
    let mut runs: Vec<Vec<Duration>> = vec![Vec::new(); VARIANTS.len()];
    let mut resolve_counters: Vec<String> = Vec::new();
    let mut stream_line = String::new();
    for _ in 0..RUNS {
        for (index, (variant, _)) in VARIANTS.iter().enumerate() {
            let output = std::process::Command::new(&exe)
                .env(CHILD_VAR, variant)
                .output()
                .expect("the bench can run itself");
            assert!(output.status.success(), "{variant} run failed");
            let text = String::from_utf8(output.stdout).expect("ASCII output");
            let fields: Vec<&str> = text.split_whitespace().collect();
            let nanos: u64 = fields[0].parse().expect("elapsed ns");
            runs[index].push(Duration::from_nanos(nanos));
            let n = fields.len();
            stream_line = format!(
                "stream: {SIGNALS} signals, {} identifiers in them, {PERSONS} persons; generated \
                 and normalized in {} s per process (not timed)",
                fields[n - 2],
                fields[n - 1]
            );
            if *variant == "resolve" {
                resolve_counters = fields[1..n - 2].iter().map(|f| f.to_string()).collect();
            }
        }
    }

    println!("{stream_line}");
    println!();
    println!(
        "| {:<46} | {:>6} | {:>10} | {:>9} | {:>18} |",
        "what (median of 3, fresh process each)", "ms", "signals/s", "ns/signal", "runs, ms"
    );
    println!(
        "|{:-<48}|{:-<8}|{:-<12}|{:-<11}|{:-<20}|",
        "", "", "", "", ""
    );
    for ((_, what), runs) in VARIANTS.iter().zip(&runs) {
        row(what, runs);
    }
    let [persons, merges, created, identifiers, conflicts] = &resolve_counters[..] else {
        panic!("unexpected counters {resolve_counters:?}");
    };
    let merges_percent = merges.parse::<f64>().expect("a count") * 100.0 / SIGNALS as f64;
    println!();
    println!(
        "end state: {persons} persons, {merges} merges ({merges_percent:.1}% of signals), \
         {created} persons created, {identifiers} identifiers, {conflicts} conflicts"
    );
}
