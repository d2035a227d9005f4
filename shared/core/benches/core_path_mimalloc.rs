//! `core_path` with mimalloc as the global allocator (the path is allocation-bound: this shows
//! how much of it is glibc's malloc).
//!
//! `cargo bench -p ferry-core --bench core_path_mimalloc`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("core_path.rs");
