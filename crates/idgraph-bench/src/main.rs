//! `idgraph-bench`: see the library's documentation, or `idgraph-bench --help`.

fn main() -> std::process::ExitCode {
    idgraph_bench::main()
}
