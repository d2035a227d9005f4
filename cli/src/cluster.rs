//! A multi-region Ferry on one machine: per region an embedded DynamoDB (with its stream), a
//! latency/fault proxy on the cross-region path, buffers and DLQs in the SQS emulator, and the
//! real enqueue and drain handlers running in-process — a stream poller feeds enqueue Lambda's
//! exact event shape, a scheduler runs every drain as Lambda's schedule would.
//!
//! An outage cuts a region off from the others: its table stops answering on the cross-region
//! path (its proxy refuses), its own pipeline (stream poller and drains) stops, while its local
//! clients keep writing. When it returns, everything catches up by itself.

use crate::stats::Stats;
use aws_lambda_events::event::dynamodb::Event;
use aws_sdk_sqs::types::QueueAttributeName;
use ferry_aws::{Buffer, ClientSettings, Table};
use ferry_core::{clock, Clock, Config};
use ferry_sandbox::{DynamoRegion, FaultMode, FaultProxy, Moto, StreamPoller, TableSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const DEFAULT_REGIONS: &[&str] = &[
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "us-west-2",
    "eu-central-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
];

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub regions: usize,
    /// Round trip added on the cross-region path (half each way).
    pub rtt_ms: u64,
    /// Region i's clock runs `i × skew` ms ahead (alternating sign).
    pub clock_skew_ms: i64,
    pub table: String,
    pub partition_key: String,
    /// How long one drain invocation runs.
    pub drain_budget: Duration,
    /// How often the schedule starts a drain invocation (Lambda: a minute; here shorter, so an
    /// outage's end is noticed quickly). Budget × 3/4 (the part spent taking messages) must
    /// exceed it, so invocations overlap.
    pub drain_period: Duration,
    /// Run each region's TTL process (every 2 s); tests switch it off to sweep by hand.
    pub ttl_sweeps: bool,
    /// Item-level or attribute-level merge (`docs/attribute-merge.md`), in every region.
    pub merge_mode: ferry_core::MergeMode,
    /// A misconfigured deployment, for tests: region index → its own merge mode.
    pub merge_mode_overrides: std::collections::BTreeMap<usize, ferry_core::MergeMode>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            regions: 2,
            rtt_ms: 0,
            clock_skew_ms: 0,
            table: "ferry-demo".into(),
            partition_key: "pk".into(),
            drain_budget: Duration::from_secs(6),
            drain_period: Duration::from_secs(4),
            ttl_sweeps: true,
            merge_mode: ferry_core::MergeMode::Item,
            merge_mode_overrides: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("sandbox: {0}")]
    Sandbox(#[from] ferry_sandbox::SandboxError),
    #[error("{0}")]
    Setup(String),
    #[error("unknown region `{0}`")]
    UnknownRegion(String),
}

/// One emulated region.
pub struct Region {
    pub name: String,
    pub dynamo: DynamoRegion,
    /// The cross-region path to this region's table.
    pub proxy: FaultProxy,
    pub clock: Clock,
    pub clock_offset_ms: i64,
    /// Set while the region is cut off: its pipeline waits.
    pub cut_off: Arc<AtomicBool>,
    pub config: Config,
}

impl Region {
    /// The local (same-region) client of this region's table.
    pub fn table(&self, table: &str) -> Table {
        Table::new(self.dynamo.client(), table)
    }
}

/// A buffer and its DLQ, from `source` to `destination`.
#[derive(Clone, Debug)]
pub struct BufferPair {
    pub source: String,
    pub destination: String,
    pub buffer: Buffer,
    pub dlq: Buffer,
}

pub struct Cluster {
    pub options: ClusterOptions,
    pub moto: Moto,
    pub regions: Vec<Region>,
    pub buffers: Vec<BufferPair>,
    pub stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Starts everything and the pipelines; returns when replication is live.
    pub async fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        if options.regions < 2 || options.regions > DEFAULT_REGIONS.len() {
            return Err(ClusterError::Setup(format!(
                "--region-count must be between 2 and {}",
                DEFAULT_REGIONS.len()
            )));
        }
        let names: Vec<String> = DEFAULT_REGIONS[..options.regions]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let moto = Moto::start().await?;
        let mut regions = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let offset = skew_of(i, options.clock_skew_ms);
            let dynamo = DynamoRegion::start(name, offset)?;
            dynamo
                .create_table(
                    &TableSpec::new(&options.table, &options.partition_key)
                        .with_ttl_attribute(&ferry_core::AttributeNames::default().ttl),
                )
                .await?;
            // The conflict log, under the template's name scheme (`ferry conflicts` finds it).
            let log = ferry_core::conflict::LogSettings::new(ferry_core::conflict::log_table_name(
                &options.table,
            ));
            dynamo
                .create_table(
                    &TableSpec::new(&log.table, ferry_core::conflict::ID)
                        .with_ttl_attribute(ferry_core::conflict::EXPIRES_AT),
                )
                .await?;
            let proxy = FaultProxy::start(&dynamo.endpoint())?;
            proxy.set_mode(normal_mode(options.rtt_ms));
            let mut config = Config::new(name.clone(), options.partition_key.clone());
            config.destinations = names.iter().filter(|n| *n != name).cloned().collect();
            config.merge_mode = options
                .merge_mode_overrides
                .get(&i)
                .copied()
                .unwrap_or(options.merge_mode);
            config.conflict_log = Some(log);
            config
                .validate()
                .map_err(|e| ClusterError::Setup(e.to_string()))?;
            regions.push(Region {
                name: name.clone(),
                dynamo,
                proxy,
                clock: clock::skewed(offset),
                clock_offset_ms: offset,
                cut_off: Arc::new(AtomicBool::new(false)),
                config,
            });
        }
        let mut buffers = Vec::new();
        for s in &names {
            let sqs = moto.sqs_client(s);
            for d in names.iter().filter(|d| *d != s) {
                buffers.push(create_buffer_pair(&sqs, s, d).await?);
            }
        }
        let (shutdown, _) = watch::channel(false);
        let mut cluster = Cluster {
            options,
            moto,
            regions,
            buffers,
            stats: Arc::new(Stats::new(&names)),
            shutdown,
            tasks: Vec::new(),
        };
        cluster.start_pipelines().await?;
        Ok(cluster)
    }

    /// `<region> dynamodb=http://127.0.0.1:<port> sqs=http://127.0.0.1:<port> table=<name>`
    pub fn endpoint_lines(&self) -> Vec<String> {
        self.regions
            .iter()
            .map(|r| {
                format!(
                    "{} dynamodb={} sqs={} table={}",
                    r.name,
                    r.dynamo.endpoint(),
                    self.moto.endpoint(),
                    self.options.table
                )
            })
            .collect()
    }

    /// Per region, a line to paste into a shell to point the SDKs at it (`export AWS_REGION=…
    /// AWS_ENDPOINT_URL_DYNAMODB=… AWS_ENDPOINT_URL_SQS=…` and the sandbox's static
    /// credentials; boto3 and the AWS CLI v1 read the region from AWS_DEFAULT_REGION).
    pub fn export_lines(&self) -> Vec<String> {
        self.regions
            .iter()
            .map(|r| {
                format!(
                    "export AWS_REGION={} AWS_DEFAULT_REGION={} AWS_ENDPOINT_URL_DYNAMODB={} AWS_ENDPOINT_URL_SQS={} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test",
                    r.name,
                    r.name,
                    r.dynamo.endpoint(),
                    self.moto.endpoint()
                )
            })
            .collect()
    }

    /// What `ferry local up` writes to its state file: every region's endpoints.
    pub fn state(&self, pid: u32, control: String) -> crate::control::State {
        crate::control::State {
            pid,
            control,
            regions: self
                .regions
                .iter()
                .map(|r| crate::control::RegionEndpoints {
                    region: r.name.clone(),
                    dynamodb: r.dynamo.endpoint(),
                    sqs: self.moto.endpoint(),
                    table: self.options.table.clone(),
                })
                .collect(),
        }
    }

    pub fn region_index(&self, name: &str) -> Result<usize, ClusterError> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| ClusterError::UnknownRegion(name.to_string()))
    }

    /// Cuts a region off from the others (until [`Cluster::end_outage`]).
    pub fn begin_outage(&self, region: usize) {
        let r = &self.regions[region];
        r.cut_off.store(true, Ordering::SeqCst);
        r.proxy.set_mode(FaultMode::Refuse);
        self.stats.outage(&r.name, true);
    }

    pub fn end_outage(&self, region: usize) {
        let r = &self.regions[region];
        r.proxy.set_mode(normal_mode(self.options.rtt_ms));
        r.cut_off.store(false, Ordering::SeqCst);
        self.stats.outage(&r.name, false);
    }

    /// Messages waiting in each buffer (visible + in flight + delayed), by (source, destination).
    pub async fn backlog(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for b in &self.buffers {
            let n = queue_depth(&b.buffer).await.unwrap_or(0);
            out.push((b.source.clone(), b.destination.clone(), n));
        }
        out
    }

    /// Messages in every DLQ together.
    pub async fn dlq_depth(&self) -> u64 {
        let mut n = 0;
        for b in &self.buffers {
            n += queue_depth(&b.dlq).await.unwrap_or(0);
        }
        n
    }

    async fn start_pipelines(&mut self) -> Result<(), ClusterError> {
        let configs: Vec<Config> = self.regions.iter().map(|r| r.config.clone()).collect();
        let cut_off: Vec<Arc<AtomicBool>> =
            self.regions.iter().map(|r| r.cut_off.clone()).collect();
        let tasks = self
            .spawn_replication(&configs, &cut_off, &self.shutdown)
            .await?;
        self.tasks.extend(tasks);
        // Every region's TTL process.
        if self.options.ttl_sweeps {
            for region in &self.regions {
                let db = region.dynamo.database().clone();
                let mut stop = self.shutdown.subscribe();
                self.tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = stop.changed() => return,
                        }
                        let _ = db.sweep_ttl();
                    }
                }));
            }
        }
        Ok(())
    }

    /// Spawns the replication of every region: enqueue on the region's stream (the real handler
    /// on a stream poller of its own) and a drain per buffer, region `i`'s running with
    /// `configs[i]` and waiting while `cut_off[i]` is set, until `stop` turns true. Every
    /// region's settings are published before any drain starts. The cluster runs it with the
    /// regions' own configs and flags; the end-to-end suite (`rewire`) with changed ones.
    pub async fn spawn_replication(
        &self,
        configs: &[Config],
        cut_off: &[Arc<AtomicBool>],
        stop: &watch::Sender<bool>,
    ) -> Result<Vec<JoinHandle<()>>, ClusterError> {
        let mut tasks = Vec::new();
        for (i, region) in self.regions.iter().enumerate() {
            // enqueue: the region's stream → its buffers.
            let destinations = self
                .buffers
                .iter()
                .filter(|b| b.source == region.name)
                .map(|b| ferry_enqueue::Destination {
                    region: b.destination.clone(),
                    buffer: b.buffer.clone(),
                })
                .collect();
            let enqueuer = ferry_enqueue::Enqueuer::new(
                configs[i].clone(),
                region.table(&self.options.table),
                destinations,
                region.clock.clone(),
            )
            .map_err(|e| ClusterError::Setup(e.to_string()))?;
            // As the Lambda does at start-up: every drain towards this region checks these.
            enqueuer.publish_settings().await;
            let poller = StreamPoller::for_table(
                &region.dynamo.endpoint(),
                &region.name,
                &self.options.table,
            )
            .await?;
            tasks.push(tokio::spawn(enqueue_loop(
                poller,
                enqueuer,
                cut_off[i].clone(),
                self.stats.clone(),
                stop.subscribe(),
            )));
        }
        // drain: one per (source, destination), running in the source region, writing through
        // the destination's cross-region proxy.
        let base = self.moto.sdk_config(&self.regions[0].name);
        for b in &self.buffers {
            let s = self.region_index(&b.source)?;
            let dest = &self.regions[self.region_index(&b.destination)?];
            let mut settings = ClientSettings::new(dest.name.clone());
            settings.dynamodb_endpoint = Some(dest.proxy.endpoint());
            settings.attempt_timeout = Some(Duration::from_secs(2));
            settings.operation_timeout = Some(Duration::from_secs(5));
            settings.connect_timeout = Some(Duration::from_millis(500));
            let table = Table::new(settings.dynamodb(&base).await, self.options.table.clone());
            tasks.push(tokio::spawn(crate::drain_task::run(
                crate::drain_task::DrainTask {
                    config: configs[s].clone(),
                    pair: b.clone(),
                    table,
                    clock: self.regions[s].clock.clone(),
                    budget: self.options.drain_budget,
                    period: self.options.drain_period,
                    cut_off: cut_off[s].clone(),
                    stats: self.stats.clone(),
                },
                stop.subscribe(),
            )));
        }
        Ok(tasks)
    }

    /// Stops every task and every server.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.moto.stop();
    }
}

fn normal_mode(rtt_ms: u64) -> FaultMode {
    if rtt_ms == 0 {
        FaultMode::Pass
    } else {
        FaultMode::Delay(Duration::from_millis(rtt_ms / 2))
    }
}

/// Region 0 keeps true time; the others are spread around it by multiples of the skew.
fn skew_of(i: usize, skew: i64) -> i64 {
    let step = i.div_ceil(2) as i64;
    if i % 2 == 1 {
        step * skew
    } else {
        -step * skew
    }
}

/// The buffers' redrive `maxReceiveCount`, as the template's default.
pub const BUFFER_MAX_RECEIVE_COUNT: u32 = 10;

async fn create_buffer_pair(
    sqs: &aws_sdk_sqs::Client,
    source: &str,
    destination: &str,
) -> Result<BufferPair, ClusterError> {
    // Both queues keep messages 14 days and take 1 MiB (as the template's); the buffer
    // dead-letters after 10 receives. (The DLQ's visibility timeout of 30 s is SQS's default.)
    // Named as template.yaml names a stack's queues, so one code path finds both.
    let stack = crate::ops::stack::LOCAL_STACK;
    let pair = Buffer::create_named_pair(
        sqs.clone(),
        &crate::ops::stack::buffer_name(stack, destination),
        &crate::ops::stack::dlq_name(stack, destination),
        &[
            (QueueAttributeName::MessageRetentionPeriod, "1209600"),
            (QueueAttributeName::MaximumMessageSize, "1048576"),
            (QueueAttributeName::VisibilityTimeout, "30"),
        ],
        Some(BUFFER_MAX_RECEIVE_COUNT),
    )
    .await
    .map_err(|e| ClusterError::Setup(format!("creating queues: {e}")))?;
    Ok(BufferPair {
        source: source.into(),
        destination: destination.into(),
        buffer: pair.buffer,
        dlq: pair.dlq,
    })
}

/// Visible + in flight + delayed messages of a queue.
pub async fn queue_depth(buffer: &Buffer) -> Option<u64> {
    buffer.depth().await.ok().map(|d| d.total())
}

/// Lambda's stream trigger, emulated: read the stream in order, hand batches to the real
/// handler, and on a reported failure resend from the failing record (Lambda's checkpoint).
async fn enqueue_loop(
    mut poller: StreamPoller,
    enqueuer: ferry_enqueue::Enqueuer,
    cut_off: Arc<AtomicBool>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let region = enqueuer.config().local_region.clone();
    let mut pending = Vec::new();
    loop {
        if *stop.borrow() {
            return;
        }
        if cut_off.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let polled = std::time::Instant::now();
        if pending.is_empty() {
            match poller.next_batch(1000).await {
                Ok(records) if !records.is_empty() => pending = records,
                _ => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(40)) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            }
        }
        let mut event = Event::default();
        event.records = std::mem::take(&mut pending);
        let handled = std::time::Instant::now();
        let outcome = ferry_enqueue::handle(&event, &enqueuer).await;
        tracing::debug!(
            region = %region,
            records = event.records.len(),
            poll_ms = handled.duration_since(polled).as_millis() as u64,
            handle_ms = handled.elapsed().as_millis() as u64,
            "enqueue batch"
        );
        stats.enqueued(&region, &outcome.counts);
        if let Some(seq) = outcome.retry_from() {
            pending = ferry_sandbox::resend_from(&mut event.records, seq);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Cluster {
    /// One line of live status: per buffer backlog, applied, conflicts, lag.
    pub async fn status_line(&self) -> String {
        let backlog = self.backlog().await;
        let drains = self.stats.drain_totals();
        let lags = self.stats.lag_samples();
        let mut parts = Vec::new();
        for (s, d, n) in backlog {
            parts.push(format!("{s}→{d} backlog={n}"));
        }
        for (region, t) in drains {
            let mut recent: Vec<u64> = lags
                .get(&region)
                .map(|v| v.iter().rev().take(500).map(|l| l.lag_ms).collect())
                .unwrap_or_default();
            recent.sort_unstable();
            parts.push(format!(
                "into {region}: applied={} conflicts={} lag_p50={}ms",
                t.applied,
                t.conflicts,
                ferry_drain::percentile(&recent, 50.0).unwrap_or(0)
            ));
        }
        parts.join(" | ")
    }
}

/// Serves one control connection of `ferry local up` (see [`crate::control`]).
pub async fn serve_control(cluster: Arc<Cluster>, stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let answer = match crate::control::parse(line.trim()) {
        Ok(crate::control::Command::Outage { region, seconds }) => {
            match cluster.region_index(&region) {
                Ok(i) => {
                    cluster.begin_outage(i);
                    eprintln!("{region} is cut off for {seconds} s");
                    let c = cluster.clone();
                    let name = region.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(seconds)).await;
                        c.end_outage(i);
                        eprintln!("{name} is back");
                    });
                    format!("ok: {region} cut off for {seconds} s")
                }
                Err(e) => format!("error: {e}"),
            }
        }
        Err(e) => format!("error: {e}"),
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}
