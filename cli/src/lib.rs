//! The `ferry` command's library: the local multi-region sandbox, the demo, and the operator
//! tools. The binary (`main.rs`) only parses arguments and calls in here. Without the default
//! `local` feature only the operator tools (`ops`) and the sandbox's control file are built.

#[cfg(feature = "local")]
pub mod cluster;
pub mod control;
#[cfg(feature = "local")]
pub mod demo;
#[cfg(feature = "local")]
pub mod drain_task;
pub mod duration;
#[cfg(feature = "local")]
pub mod home;
pub mod ops;
#[cfg(feature = "local")]
pub mod plot;
#[cfg(feature = "local")]
pub mod stats;
#[cfg(feature = "local")]
pub mod workload;
