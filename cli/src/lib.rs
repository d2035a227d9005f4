//! The `ferry` command's library: the local multi-region sandbox, the demo, and the operator
//! tools. The binary (`main.rs`) only parses arguments and calls in here.

pub mod cluster;
pub mod control;
pub mod demo;
pub mod drain_task;
pub mod home;
pub mod ops;
pub mod plot;
pub mod stats;
pub mod workload;
