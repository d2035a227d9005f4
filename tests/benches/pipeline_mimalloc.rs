//! `cargo bench -p ferry-e2e --bench pipeline_mimalloc -- [options]`: the pipeline bench with
//! mimalloc as the global allocator, the same options as `pipeline`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    ferry_e2e::pipeline_bench::main_with(ferry_e2e::pipeline_bench::Args {
        out: Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../out/bench/pipeline-mimalloc.json"
            )
            .into(),
        ),
        ..Default::default()
    });
}
