//! How many drain workers one scheduled tick runs for a destination (the tick's own drain
//! included). LWW writes commute, so workers may share a buffer freely; this only decides how
//! many are worth paying for.
//!
//! The demand over the next budget is the backlog on the buffer plus what keeps arriving (the
//! last tick's drained rate, all its workers together); one worker's capacity is the rate its
//! applies reached while busy. Without a last tick the backlog alone decides, at a fixed
//! number of messages per worker. A destination that does not answer gets no extra worker:
//! the tick's own drain pings it, takes nothing and returns. One that is back after the last
//! tick found it down gets the whole fan-out for its backlog: the replay is what the outage
//! left, and its messages (re-queued ones are packed full) say little about its size.
//!
//! A tick under way looks at the buffer again every few seconds ([`grow`]): a load that starts
//! or rises mid-tick gets its workers within seconds, not at the next tick. The buffer's depth
//! alone misses a worker that keeps up with receiving but not with applying: it holds every
//! message in flight while they wait for its applies, and the visible backlog stays empty. So
//! a look also weighs how long the records just applied waited since they reached the buffer.

/// The buffer's depth, in messages (`GetQueueAttributes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Messages that can be received now (`ApproximateNumberOfMessages`).
    pub visible: u64,
}

/// What the tick's own drain saw during the last tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Workers the last tick ran (the tick's own drain included).
    pub workers: u32,
    /// Records the tick's own drain took.
    pub records: u64,
    /// Its wall time.
    pub elapsed_ms: u64,
    /// Of that, the time its applies were running (the stage that bounds a worker's rate).
    pub busy_ms: u64,
    /// Records per message in its takes.
    pub records_per_message: f64,
}

/// The destination as the tick finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Answers,
    /// Did not answer the tick's ping (or its settings disagree): no extra worker.
    Silent,
    /// Answers again; the last tick found it silent.
    Back,
}

/// The deployment's bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FanoutPolicy {
    /// Workers per destination at most (`MaxDrainConcurrency`).
    pub max_workers: u32,
    /// One worker's budget.
    pub budget_ms: u64,
    /// Without a last tick: one worker per this many visible messages.
    pub messages_per_worker: u64,
    /// The share of a worker's measured capacity that is planned for (below 1: room for a
    /// slower take, a throttled write, a worker that starts late).
    pub headroom: f64,
    /// A tick under way adds workers while records wait longer than this between the buffer
    /// and their write (half of a 2 s replication-lag goal: the other half is the stream's).
    pub wait_goal_ms: u64,
}

impl Default for FanoutPolicy {
    fn default() -> Self {
        FanoutPolicy {
            max_workers: 4,
            budget_ms: 50_000,
            messages_per_worker: 20,
            headroom: 0.7,
            wait_goal_ms: 1_000,
        }
    }
}

/// What a tick under way sees at one of its looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    pub backlog: Backlog,
    /// Messages received and not yet deleted (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: u64,
    /// The longest a record applied since the last look waited from its arrival on the buffer
    /// (`SentTimestamp`) to its write; `None` if none was applied.
    pub waited_ms: Option<u64>,
}

/// Workers for the next tick, from 1 (the tick's own drain) to `max_workers`.
pub fn workers(
    backlog: Backlog,
    last: Option<Pace>,
    destination: Destination,
    policy: &FanoutPolicy,
) -> u32 {
    let most = policy.max_workers.max(1);
    match destination {
        Destination::Silent => return 1,
        Destination::Back if backlog.visible > 0 => return most,
        _ => {}
    }
    let wanted = match last.and_then(|p| by_rate(backlog, p, policy)) {
        Some(w) => w,
        None if backlog.visible == 0 => 1.0,
        None => backlog.visible as f64 / policy.messages_per_worker.max(1) as f64,
    };
    if !wanted.is_finite() {
        return most;
    }
    (wanted.ceil() as u64).clamp(1, most as u64) as u32
}

/// A tick under way grows its fan-out only from this many visible messages: one or two
/// messages are what a steady load leaves between two receives.
pub const GROWING_FROM: u64 = 2;

/// Workers to add to a tick under way, at one of its periodic looks (`before`: the backlog at
/// the last look; `running`: the tick's workers, itself included). While the backlog grows,
/// stands at more than `messages_per_worker` for each worker, or records wait past
/// `wait_goal_ms` with messages still on the buffer, the workers double, up to `max_workers`:
/// a few looks reach the cap, and the cost of overshooting is a few idle workers until the tick
/// ends. A shrinking backlog adds none; the next tick sizes afresh.
pub fn grow(now: Look, before: Backlog, running: u32, policy: &FanoutPolicy) -> u32 {
    let most = policy.max_workers.max(1);
    let running = running.max(1);
    let visible = now.backlog.visible;
    let waiting =
        now.waited_ms.is_some_and(|w| w > policy.wait_goal_ms) && visible + now.in_flight > 0;
    if running >= most || (visible < GROWING_FROM && !waiting) {
        return 0;
    }
    let growing = visible > before.visible;
    let deep = visible > policy.messages_per_worker.max(1) * u64::from(running);
    if growing || deep || waiting {
        running.min(most - running)
    } else {
        0
    }
}

/// Demand over capacity, in worker-budgets, when the last tick measured a rate; `None` when it
/// had nothing to measure (no record taken, or no apply time).
fn by_rate(backlog: Backlog, p: Pace, policy: &FanoutPolicy) -> Option<f64> {
    if p.records == 0 || p.busy_ms == 0 || p.elapsed_ms == 0 {
        return None;
    }
    let budget_s = policy.budget_ms as f64 / 1000.0;
    let capacity_per_s = p.records as f64 / (p.busy_ms as f64 / 1000.0);
    let arriving_per_s = p.records as f64 / (p.elapsed_ms as f64 / 1000.0) * p.workers as f64;
    let queued = backlog.visible as f64 * p.records_per_message.max(1.0);
    let demand = queued + arriving_per_s * budget_s;
    Some(demand / (capacity_per_s * budget_s * policy.headroom.clamp(0.1, 1.0)))
}
