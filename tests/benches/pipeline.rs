//! `cargo bench -p ferry-e2e --bench pipeline -- [options]`: see `ferry_e2e::pipeline_bench`.

fn main() {
    ferry_e2e::pipeline_bench::main_with(ferry_e2e::pipeline_bench::Args {
        out: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../out/bench/pipeline.json").into()),
        ..Default::default()
    });
}
