//! What PARSE costs per row of a wide lead file (the benchmark's 400 columns, `leads` preset):
//! `parse_row`, and `split_fields` alone, against reading the row's bytes once in the same run
//! (checking them as UTF-8 and counting delimiters, which any reader of the row does).
//!
//! `cargo bench -p idgraph-import --bench parse` (rows: `IDGRAPH_BENCH_ROWS`, default 20,000).

use std::hint::black_box;
use std::time::Instant;

use idgraph_import::{Header, Limits, Mapping, parse_row, split_fields};
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
    println!(
        "split_fields {:.1}× the baseline, parse_row {:.1}×",
        split / baseline,
        parse / baseline
    );
}
