//! # ferry-drain
//!
//! Applies one buffer queue (source region → destination region) to the destination table with
//! last-writer-wins conditional writes, as `docs/contract.md` specifies. Every decision
//! (unpacking, coalescing, the apply condition, the judgement of a refused write) is
//! `ferry-core`'s; this crate only schedules the I/O around them.
//!
//! One [`drain`] call runs *takes* until its budget is spent:
//!
//! 1. **Ping** the destination unless it answered within `ping_interval`. No answer: return
//!    without receiving — no receive count is burnt and nothing can reach the DLQ while a
//!    region is down. (A throttled ping counts as an answer.)
//! 2. **Receive** up to `take_messages` messages — fewer once a take has shown how many records
//!    a message carries (`take_records` bounds a take's memory) — with a long poll, then
//!    parallel short polls if the first came back full; **unpack** them (an unreadable message
//!    is dead-lettered whole with the reason), **coalesce** per key across the whole take.
//! 3. **Write** each key's winner with `Table::put_if(image, apply_condition(..))` (attribute
//!    mode: merge it into the item, `merge_apply.rs`), at most `max_in_flight` at once. A
//!    refused write is **judged**: stale → done; conflict → done, counted and logged with both
//!    versions; pending → not done. Throttling halves the concurrency and pauses with an
//!    exponential back-off, and the record is retried in the same take. A transport failure (or
//!    a configuration error) halts the take: nothing new is started, and the drain returns
//!    after settling. A record DynamoDB rejects as invalid goes to the DLQ; the rest proceeds.
//! 4. **Settle**: winners not done are put back on the buffer as new messages (packed by the
//!    core), rejected ones are dead-lettered, and only then is each message whose records are
//!    all secured deleted. See [`take`] for the rules and the crate's README for why.
//!
//! Each step has its room: `receive.rs` (1–2), `apply.rs` (3; with `pacing.rs`, `cap.rs`
//! for a write-rate cap, and `merge_apply.rs` for attribute mode), `settle.rs` (4), and `pipeline.rs`, which overlaps the
//! takes. `take.rs` holds the pure bookkeeping of one take.
//!
//! The call is a plain `async fn` on a shared [`Drainer`]: the Lambda's `main.rs` runs a
//! [`tick`] per scheduled event (which may start more workers of the same buffer, `fanout.rs`)
//! and a [`work`] per worker event; the local sandbox can call it on a timer, with short budgets, even
//! overlapping (SQS visibility keeps two calls from holding the same message, and every write
//! is idempotent).

mod apply;
pub mod cap;
mod conflict_log;
pub mod env;
pub mod fanout;
mod merge_apply;
mod pacing;
mod pause_gate;
pub mod peer_gate;
mod pipeline;
mod receive;
pub mod report;
pub mod settings;
mod settle;
mod take;
mod wear;

pub use env::{DrainEnv, EnvError};
pub use fanout::{
    tick, work, LambdaWorkers, LocalWorkers, NoWorkers, StartWorkers, Ticker, Waits, WorkerEvent,
    WorkerOrder,
};
pub use peer_gate::PeerGate;
pub use report::{emf_lines, percentile, ConflictSample, DrainReport, LagParts, StopReason};
pub use settings::DrainSettings;

use ferry_aws::{Buffer, Table};
use ferry_core::{Clock, Config};
use std::time::Duration;

/// Everything one drain needs: the shared config, the pair's buffer and DLQ (in the source
/// region), the destination table, its pacing and a clock (for lag).
pub struct Drainer {
    pub config: Config,
    pub source_region: String,
    pub destination_region: String,
    pub buffer: Buffer,
    pub dlq: Buffer,
    /// The destination table.
    pub table: Table,
    pub settings: DrainSettings,
    pub clock: Clock,
    /// The destination's published settings, as last checked (start with `Default`).
    pub peer: PeerGate,
    /// How long the records applied lately waited since the buffer (start with `Default`).
    pub waits: Waits,
}

impl std::fmt::Debug for Drainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drainer")
            .field("source_region", &self.source_region)
            .field("destination_region", &self.destination_region)
            .field("buffer", &self.buffer.queue_url)
            .field("dlq", &self.dlq.queue_url)
            .field("table", &self.table.name)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Drains for `drainer.settings.budget`.
pub async fn drain(drainer: &Drainer) -> DrainReport {
    drain_for(drainer, drainer.settings.budget).await
}

/// Drains for `budget` (the Lambda passes what its deadline allows, if that is less).
///
/// The takes are pipelined: while one take is applied and another settled, the next one is
/// already being received, so neither SQS's receive nor its delete latency is added to every
/// record's lag. At most `settings.takes_in_flight` takes are held at once (received and not
/// yet settled; 1 is the strictly sequential receive → apply → settle). Every take is settled
/// by the rules of `settle.rs` on its own: a message is deleted only after all its records are
/// done, and not-done records are re-queued before it is deleted.
pub async fn drain_for(drainer: &Drainer, budget: Duration) -> DrainReport {
    let span = tracing::info_span!(
        "drain",
        source = %drainer.source_region,
        destination = %drainer.destination_region,
    );
    let run = conflict_log::in_invocation(drainer, pipeline::run(drainer, budget));
    tracing::Instrument::instrument(run, span).await
}
