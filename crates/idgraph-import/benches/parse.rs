//! What PARSE costs per row of a wide lead file (the benchmark's 400 columns, `leads` preset):
//! `parse_row`, and `split_fields` alone, against reading the row's bytes once in the same run
//! (checking them as UTF-8 and counting delimiters, which any reader of the row does); and
//! what cutting the uploaded bytes into records costs LAND (`Splitter`), per row, against the
//! same baseline.
//!
//! `cargo bench -p idgraph-import --bench parse` (rows: `IDGRAPH_BENCH_ROWS`, default 20,000).

use std::hint::black_box;
use std::time::Instant;

use idgraph_import::{Header, Limits, Mapping, Splitter, parse_row, split_fields};
use idgraph_workload::leads::{LeadFileSpec, LeadRows, header};

const COLUMNS: usize = 400;

/// Nanoseconds per row of `f` over `rows`: one warm-up pass, then the best of three.
fn time(label: &str, rows: &[Vec<u8>], mut f: impl FnMut(&[u8])) -> f64 {
    for row in rows {
        f(row);
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for row in rows {
            f(row);
        }
        best = best.min(start.elapsed().as_nanos() as f64 / rows.len() as f64);
    }
    println!("{label:<44} {best:>8.0} ns/row");
    best
}

/// Nanoseconds per row of one call of `f` over all `rows` rows: a warm-up, then the best of three.
fn time_stream(label: &str, rows: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        f();
        best = best.min(start.elapsed().as_nanos() as f64 / rows as f64);
    }
    println!("{label:<44} {best:>8.0} ns/row");
    best
}

fn main() {
    let count: u64 = std::env::var("IDGRAPH_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let spec = LeadFileSpec::new(count, COLUMNS, 42);
    let mut generator = LeadRows::new(spec);
    let rows: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let mut line = Vec::new();
            generator.next_row(&mut line);
            line
        })
        .collect();
    let bytes: usize = rows.iter().map(Vec::len).sum();
    let plan = Mapping::leads()
        .plan(&Header::parse(header(&spec).as_bytes(), b',').expect("the generated header parses"));
    let limits = Limits::default();
    println!(
        "idgraph import parse, {count} rows × {COLUMNS} columns, {} bytes a row on average",
        bytes / rows.len()
    );

    let baseline = time("baseline: UTF-8 check and delimiter count", &rows, |row| {
        let text = std::str::from_utf8(black_box(row)).expect("generated rows are UTF-8");
        black_box(text.bytes().filter(|b| *b == b',').count());
    });
    let split = time("split_fields", &rows, |row| {
        black_box(split_fields(black_box(row), b','));
    });
    let parse = time("parse_row (leads preset)", &rows, |row| {
        black_box(parse_row(&plan, black_box(row), None, &limits)).expect("generated rows parse");
    });
    // The rows as the upload brings them: one stream, cut into 64 KiB pieces.
    let mut stream = Vec::with_capacity(bytes + rows.len());
    for row in &rows {
        stream.extend_from_slice(row);
        stream.push(b'\n');
    }
    let pieces: Vec<&[u8]> = stream.chunks(64 << 10).collect();
    let mut records = Vec::with_capacity(rows.len());
    let land = time_stream("Splitter (LAND), 64 KiB pieces", rows.len(), || {
        let mut splitter = Splitter::new(b',', limits.clone());
        splitter.expect_fields(COLUMNS);
        records.clear();
        for piece in &pieces {
            splitter.push(black_box(piece), &mut records);
        }
        splitter.finish(&mut records);
        assert_eq!(records.len(), rows.len());
    });
    println!(
        "split_fields {:.1}× the baseline, parse_row {:.1}×, Splitter {:.1}×",
        split / baseline,
        parse / baseline,
        land / baseline
    );
}
