//! `enqueue_path` with mimalloc as the global allocator (glibc's malloc dominates the profile).
//!
//! `cargo bench -p ferry-enqueue --bench enqueue_path_mimalloc`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("enqueue_path.rs");
