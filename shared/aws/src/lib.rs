//! Ferry's AWS adapter: the one place that talks to DynamoDB and SQS. The functions and the CLI
//! share it; the replication decisions stay in `ferry-core`.

pub mod apply;
pub mod buffer;
pub mod buffer_attributes;
pub mod clients;
pub mod conflict_log;
pub mod emf;
pub mod env;
pub mod error;
pub mod heartbeat;
#[cfg(feature = "stack")]
pub mod iam;
pub mod inspect;
pub mod invoke;
pub mod logs;
pub mod merge_apply;
pub mod pause;
pub mod peer;
pub mod queue;
pub mod renew;
pub mod retry;
pub mod scan;
#[cfg(feature = "stack")]
pub mod stack;
pub mod table;
pub mod values;

pub use apply::ApplyOutcome;
pub use buffer::{Buffer, Received};
pub use buffer_attributes::{ReceivedWithAttributes, ATTEMPTS_ATTRIBUTE, FIRST_SENT_ATTRIBUTE};
pub use clients::{ClientSettings, Clients};
pub use conflict_log::ConflictLog;
pub use error::{AwsError, ErrorKind};
pub use invoke::Function;
pub use merge_apply::{MergeOutcome, MAX_MERGE_ROUNDS};
pub use queue::{QueueDepth, QueuePair};
pub use table::{Table, TableDescription, WriteOutcome};
