//! A cluster whose handlers the test runs by hand, one invocation at a time, so that it can kill
//! any of them (abort the task running it, as Lambda's timeout or a crash would end it: no
//! graceful stop) and move a region's clock. Each region is a dynoxide server whose clock is
//! also the region's Ferry clock; buffers live on one moto with a short visibility timeout, so
//! what a killed drain had received comes back within seconds.
//!
//! Lambda's stream trigger is emulated as in `ferry local up`: a batch is handed again, whole,
//! until an invocation returns (a killed one returns nothing), then from its reported failure.

use crate::{look_at, App, Look, TABLE};
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_sdk_sqs::types::QueueAttributeName;
use ferry_aws::{Buffer, Table};
use ferry_cli::cluster::BufferPair;
use ferry_core::{Clock, Config};
use ferry_drain::{DrainReport, DrainSettings, Drainer};
use ferry_enqueue::Enqueuer;
use ferry_sandbox::{DynamoRegion, Moto, StreamPoller, TableSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The buffers' visibility timeout (s): a killed drain's messages come back this soon.
pub const VISIBILITY_S: i32 = 4;
/// The buffers' redrive `maxReceiveCount` (the template's default), told to the drains.
pub const MAX_RECEIVE_COUNT: u32 = 10;

pub struct HandRegion {
    pub name: String,
    pub dynamo: DynamoRegion,
    pub config: Config,
    /// Reads the dynoxide clock: moving one moves both.
    pub clock: Clock,
    enqueuer: Arc<Enqueuer>,
    poller: StreamPoller,
    /// The batch Lambda would hand again (nothing returned yet, or a failure reported).
    pending: Vec<EventRecord>,
}

/// How one invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Completed,
    Killed,
    /// Nothing to do (no stream records).
    Idle,
}

pub struct HandCluster {
    pub moto: Moto,
    pub regions: Vec<HandRegion>,
    pub buffers: Vec<BufferPair>,
    drainers: Vec<Arc<Drainer>>,
    pub drained: DrainReport,
}

impl HandCluster {
    pub async fn start(names: &[&str]) -> HandCluster {
        crate::init_tracing();
        let moto = Moto::start().await.expect("moto starts");
        let mut buffers = Vec::new();
        for s in names {
            for d in names.iter().filter(|d| *d != s) {
                buffers.push(buffer_pair(&moto, s, d).await);
            }
        }
        let mut regions = Vec::new();
        for name in names {
            regions.push(region(name, names, &buffers).await);
        }
        let drainers = buffers
            .iter()
            .map(|b| Arc::new(drainer(b, &regions)))
            .collect();
        HandCluster {
            moto,
            regions,
            buffers,
            drainers,
            drained: DrainReport::default(),
        }
    }

    pub fn apps(&self) -> Vec<App> {
        self.regions
            .iter()
            .map(|r| {
                let mut app = App::new(&r.name, r.dynamo.client(), TABLE, r.config.clone());
                app.clock = r.clock.clone();
                app
            })
            .collect()
    }

    /// One enqueue invocation of region `i` on its next batch, killed after `kill` if given.
    pub async fn enqueue(&mut self, i: usize, kill: Option<Duration>) -> Ended {
        let r = &mut self.regions[i];
        if r.pending.is_empty() {
            r.pending = r.poller.next_batch(200).await.unwrap_or_default();
            if r.pending.is_empty() {
                return Ended::Idle;
            }
        }
        let mut event = Event::default();
        event.records = r.pending.clone();
        let enqueuer = r.enqueuer.clone();
        let task = tokio::spawn(async move {
            let outcome = ferry_enqueue::handle(&event, &enqueuer).await;
            outcome.retry_from().map(|s| {
                let mut records = event.records;
                ferry_sandbox::resend_from(&mut records, s)
            })
        });
        match run_or_kill(task, kill).await {
            None => Ended::Killed,
            Some(retry) => {
                r.pending = retry.unwrap_or_default();
                Ended::Completed
            }
        }
    }

    /// One drain invocation of buffer `b`, killed after `kill` if given.
    pub async fn drain(&mut self, b: usize, kill: Option<Duration>) -> Ended {
        let drainer = self.drainers[b].clone();
        let task = tokio::spawn(async move { ferry_drain::drain(&drainer).await });
        match run_or_kill(task, kill).await {
            None => Ended::Killed,
            Some(report) => {
                self.drained.absorb(&report);
                Ended::Completed
            }
        }
    }

    /// Runs every handler to completion, re-handing killed batches, until the cluster has
    /// converged (three looks in a row) or `timeout` passes: `Err(last look)` then.
    pub async fn heal(&mut self, timeout: Duration) -> Result<Look, Look> {
        let start = Instant::now();
        let mut in_a_row = 0;
        loop {
            for i in 0..self.regions.len() {
                while start.elapsed() < timeout && self.enqueue(i, None).await != Ended::Idle {}
            }
            for b in 0..self.buffers.len() {
                self.drain(b, None).await;
            }
            let l = self.look().await;
            in_a_row = if l.converged() { in_a_row + 1 } else { 0 };
            if in_a_row >= 3 {
                return Ok(l);
            }
            if start.elapsed() > timeout {
                return Err(l);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn look(&self) -> Look {
        let tables: Vec<(String, Table)> = self
            .regions
            .iter()
            .map(|r| (r.name.clone(), Table::new(r.dynamo.client(), TABLE)))
            .collect();
        let buffers: Vec<&Buffer> = self.buffers.iter().map(|b| &b.buffer).collect();
        look_at(&tables, &buffers, &self.regions[0].config).await
    }

    /// Every DLQ message's reason, by (source, destination).
    pub async fn dlq_reasons(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for b in &self.buffers {
            let n = ferry_cli::cluster::queue_depth(&b.dlq).await.unwrap_or(0) as usize;
            for (_, reason) in crate::dlq_messages(&b.dlq, n, Duration::from_secs(10)).await {
                let reason = reason.unwrap_or_else(|| "no reason (redrive policy)".into());
                out.push((b.source.clone(), b.destination.clone(), reason));
            }
        }
        out
    }
}

/// Awaits `task`, or aborts it after `kill` (what it had done stays done; the rest never runs).
async fn run_or_kill<T: Send + 'static>(
    task: tokio::task::JoinHandle<T>,
    kill: Option<Duration>,
) -> Option<T> {
    let abort = task.abort_handle();
    let killer = kill.map(|d| {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            abort.abort();
        })
    });
    let out = task.await.ok();
    if let Some(k) = killer {
        k.abort();
    }
    out
}

async fn buffer_pair(moto: &Moto, source: &str, destination: &str) -> BufferPair {
    let visibility = VISIBILITY_S.to_string();
    let stack = ferry_cli::ops::stack::LOCAL_STACK;
    let pair = Buffer::create_named_pair(
        moto.sqs_client(source),
        &ferry_cli::ops::stack::buffer_name(stack, destination),
        &ferry_cli::ops::stack::dlq_name(stack, destination),
        &[(QueueAttributeName::VisibilityTimeout, visibility.as_str())],
        Some(MAX_RECEIVE_COUNT),
    )
    .await
    .expect("queues");
    BufferPair {
        source: source.into(),
        destination: destination.into(),
        buffer: pair.buffer,
        dlq: pair.dlq,
    }
}

async fn region(name: &str, names: &[&str], buffers: &[BufferPair]) -> HandRegion {
    let dynamo = DynamoRegion::start(name, 0).expect("dynoxide");
    let mut config = Config::new(name, crate::PK);
    config.destinations = names
        .iter()
        .filter(|n| *n != &name)
        .map(|n| n.to_string())
        .collect();
    dynamo
        .create_table(&TableSpec::new(TABLE, crate::PK).with_ttl_attribute(&config.names.ttl))
        .await
        .expect("table");
    let dclock = dynamo.clock().clone();
    let clock: Clock = Arc::new(move || dclock.now_ms().max(0) as u64);
    let destinations = buffers
        .iter()
        .filter(|b| b.source == name)
        .map(|b| ferry_enqueue::Destination {
            region: b.destination.clone(),
            buffer: b.buffer.clone(),
        })
        .collect();
    let enqueuer = Enqueuer::new(
        config.clone(),
        Table::new(dynamo.client(), TABLE),
        destinations,
        clock.clone(),
    )
    .expect("enqueuer");
    enqueuer.publish_settings().await;
    let poller = StreamPoller::for_table(&dynamo.endpoint(), name, TABLE)
        .await
        .expect("poller");
    HandRegion {
        name: name.into(),
        dynamo,
        config,
        clock,
        enqueuer: Arc::new(enqueuer),
        poller,
        pending: Vec::new(),
    }
}

/// A drain of `b`, running in its source region (that region's clock), as the Lambda would.
fn drainer(b: &BufferPair, regions: &[HandRegion]) -> Drainer {
    let source = regions.iter().find(|r| r.name == b.source).expect("source");
    let dest = regions
        .iter()
        .find(|r| r.name == b.destination)
        .expect("destination");
    let mut settings = DrainSettings::with_budget(Duration::from_secs(3));
    settings.return_when_idle = true;
    settings.receive_wait_s = 0;
    settings.visibility_timeout_s = VISIBILITY_S;
    settings.max_receive_count = Some(MAX_RECEIVE_COUNT);
    Drainer {
        config: source.config.clone(),
        source_region: b.source.clone(),
        destination_region: b.destination.clone(),
        buffer: b.buffer.clone(),
        dlq: b.dlq.clone(),
        table: Table::new(dest.dynamo.client(), TABLE),
        settings,
        clock: source.clock.clone(),
        peer: Default::default(),
        waits: Default::default(),
    }
}
