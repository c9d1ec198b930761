//! What sealing costs per value: an event's properties, its identifiers and one identifier
//! sealed and blind-indexed, against copying and base64-encoding the same bytes in the same
//! run (what a store would do with the value anyway).
//!
//! `cargo bench -p idgraph-store --bench vault` (values: `IDGRAPH_BENCH_VALUES`, default 200k).

use std::hint::black_box;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use idgraph_store::vault::{Vault, column};

const PROPERTIES: &str =
    r#"{"product_id":"p-1234","category":"shoes","price":59.99,"currency":"USD"}"#;
const IDENTIFIERS: &str = r#"[{"kind":"anonymous_id","value":"3f1c2b9a-51d2-4e0b-8a7c-2f9e6d1b0c44","source":"segment"}]"#;
const EMAIL: &str = "visitor12345@example42.com";
const LANDED_ROW_BYTES: usize = 3_300;

fn time(label: &str, n: usize, mut f: impl FnMut(usize)) -> f64 {
    // One pass to warm caches and the allocator, then the timed one.
    for i in 0..n / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{label:<44} {ns:>8.0} ns");
    ns
}

fn main() {
    let n: usize = std::env::var("IDGRAPH_BENCH_VALUES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let vault = Vault::random().expect("a vault");
    println!("idgraph vault, {n} values each");
    let base = time("baseline: copy + base64 of properties", n, |_| {
        black_box(STANDARD_NO_PAD.encode(black_box(PROPERTIES).as_bytes()));
    });
    let props = time("seal event properties (73 B)", n, |_| {
        black_box(vault.seal("default", column::EVENT_PROPERTIES, black_box(PROPERTIES)))
            .expect("sealed");
    });
    time("seal event identifiers (104 B)", n, |_| {
        black_box(vault.seal("default", column::EVENT_IDENTIFIERS, black_box(IDENTIFIERS)))
            .expect("sealed");
    });
    time("blind index of an email", n, |_| {
        black_box(vault.index("default", "email", black_box(EMAIL)));
    });
    let sealed = vault
        .seal("default", column::EVENT_PROPERTIES, PROPERTIES)
        .expect("sealed");
    time("open event properties", n, |_| {
        black_box(vault.open(
            "default",
            column::EVENT_PROPERTIES,
            black_box(sealed.clone()),
        ))
        .expect("opened");
    });
    println!("sealing properties / baseline: {:.1}x", props / base);
    // A landed row of the import benchmark's 400-column file is about 3.3 KB; its bytes go
    // through the cipher twice, sealed when they land and opened when they are parsed.
    let row: Vec<u8> = (0..LANDED_ROW_BYTES)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let rows = n / 10;
    let copy = time("baseline: copy of a landed row (3.3 KB)", rows, |_| {
        black_box(black_box(&row).clone());
    });
    let seal_row = time("seal a landed row (3.3 KB)", rows, |_| {
        black_box(vault.seal_bytes("default", column::IMPORT_ROW, black_box(&row)))
            .expect("sealed");
    });
    let sealed_row = vault
        .seal_bytes("default", column::IMPORT_ROW, &row)
        .expect("sealed");
    time("open a landed row (3.3 KB)", rows, |_| {
        black_box(vault.open_bytes("default", column::IMPORT_ROW, black_box(sealed_row.clone())))
            .expect("opened");
    });
    println!(
        "sealing a landed row: {:.2} GB/s ({:.0}x a copy)",
        LANDED_ROW_BYTES as f64 / seal_row,
        seal_row / copy
    );
}
