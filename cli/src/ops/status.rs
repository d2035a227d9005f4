//! `ferry status`: a one-screen view of replication health. Per region: whether its table
//! answers and its stream's view type. Per buffer (source → destination): messages visible,
//! in flight and delayed, the DLQ's depth, and with `--peek` the age of the oldest message seen
//! and an estimate of the records queued.
//!
//! SQS's API has no "age of the oldest message" (ApproximateAgeOfOldestMessage is a CloudWatch
//! metric, and the emulator has none): `--peek` receives up to 10 messages of each queue with a
//! zero visibility timeout and reports the oldest `SentTimestamp` among them (a lower bound on
//! a standard queue, which hands out a sample) and records ≈ messages × the mean `ferry-records`
//! of the sample. A peek counts as a receive towards the buffer's maxReceiveCount, which is why
//! it is not the default.
//!
//! A pair whose drains run under a write-rate cap (the stack's `MaxWriteUnitsPerSecond`
//! output, or `--max-wcu` for every pair) shows the cap and, with `--peek`, the write units
//! waiting (messages × the sample's mean units per message) and how long they take at the cap:
//! the lag the cap adds to the newest change waiting, if nothing else arrives.

use super::target::{Target, TargetArgs};
use super::write_cap::parse_max_wcu;
use super::{finish, OpsError, EXIT_FOUND, EXIT_OK};
use clap::Args;
use ferry_aws::buffer::RECORDS_ATTRIBUTE;
use ferry_aws::{Buffer, QueueDepth};
use ferry_core::rate::write_units;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

/// The view type Ferry's enqueue needs.
pub const NEEDED_VIEW_TYPE: &str = "NEW_AND_OLD_IMAGES";

#[derive(Args, Clone, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The regions, comma-separated (default with --local or --stack: every region of the sandbox or the stacks).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Sample each queue (zero visibility timeout) for the oldest message's age and records.
    #[arg(long)]
    pub peek: bool,
    /// The write-rate cap of every pair's drains, in write units per second (default: each
    /// stack's MaxWriteUnitsPerSecond; 0: none): shows what the backlog costs in lag at the cap.
    #[arg(long, value_name = "N", value_parser = parse_max_wcu)]
    pub max_wcu: Option<f64>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RegionStatus {
    pub region: String,
    pub answers: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub stream_view_type: Option<String>,
    /// What the region's enqueue publishes on its table (`ferry:merge-mode`, `ferry:settings`):
    /// `None` when untagged (its enqueue has not started yet) or unreadable.
    pub merge_mode: Option<String>,
    pub settings: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BufferStatus {
    pub source: String,
    pub destination: String,
    pub buffer: QueueDepth,
    pub dlq: QueueDepth,
    /// With `--peek`: the oldest sampled message's age.
    pub oldest_age_s: Option<u64>,
    /// With `--peek`: messages × mean records per sampled message.
    pub approx_records: Option<u64>,
    pub destination_answers: bool,
    /// Set when an operator paused the pair (`ferry pause`).
    pub paused: Option<PausedPair>,
    /// Set when the pair's drains run under a write-rate cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<CappedPair>,
    /// With `--peek`: what the sample held.
    #[serde(skip)]
    pub sample: Option<Sample>,
}

/// A pair under a write-rate cap, and the lag it costs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CappedPair {
    pub max_wcu: f64,
    /// With `--peek`: the write units waiting (messages × the sample's mean units per message).
    pub waiting_units: Option<u64>,
    /// With `--peek`: how long they take at the cap, if nothing else arrives.
    pub drains_in_s: Option<u64>,
}

impl CappedPair {
    /// The cap's cost for a buffer of `depth` messages, from a peek's sample (pure).
    pub fn of(max_wcu: f64, depth: &QueueDepth, sample: Option<&Sample>) -> CappedPair {
        let waiting_units = sample
            .filter(|s| s.messages > 0)
            .map(|s| (depth.total() as f64 * s.units as f64 / s.messages as f64).round() as u64);
        CappedPair {
            max_wcu,
            waiting_units,
            drains_in_s: waiting_units
                .and_then(|u| ferry_core::rate::drain_time(u, max_wcu))
                .map(|d| d.as_secs_f64().ceil() as u64),
        }
    }
}

/// A paused pair: since when, why, and how long before held changes would expire.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PausedPair {
    pub note: String,
    /// How long it has been paused (unknown for a mark set by hand without a time).
    pub for_s: Option<u64>,
    /// The buffer's retention (s).
    pub retention_s: u64,
    /// Time left before the first change held back by the pause would expire.
    pub expires_in_s: Option<u64>,
}

impl PausedPair {
    fn of(pause: &ferry_core::pause::Pause, retention_s: u64, now_ms: u64) -> PausedPair {
        PausedPair {
            note: pause.note.clone(),
            for_s: pause.paused_for_ms(now_ms).map(|ms| ms / 1000),
            retention_s,
            expires_in_s: pause.expires_in_ms(retention_s, now_ms).map(|ms| ms / 1000),
        }
    }
}

/// A paused pair is a problem once its held changes are a day from expiring.
const PAUSE_WARNING_S: u64 = 86_400;

#[derive(Clone, Debug, Serialize, Default)]
pub struct StatusReport {
    pub table: String,
    pub regions: Vec<RegionStatus>,
    pub buffers: Vec<BufferStatus>,
    pub healthy: bool,
    pub problems: Vec<String>,
    pub oldest_age_source: String,
}

/// What a peek sample says: the oldest send time and records per message.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub oldest_sent_ms: Option<u64>,
    pub messages: u64,
    pub records: u64,
    /// The write units the sampled messages' records would take (`ferry_core::rate`).
    pub units: u64,
}

/// Estimates from a sample (pure).
pub fn estimate(depth: &QueueDepth, sample: &Sample, now_ms: u64) -> (Option<u64>, Option<u64>) {
    let age = sample
        .oldest_sent_ms
        .map(|t| now_ms.saturating_sub(t) / 1000);
    let records = (sample.messages > 0).then(|| {
        (depth.total() as f64 * sample.records as f64 / sample.messages as f64).round() as u64
    });
    (age, records)
}

/// The health verdict (pure): problems an operator must look at.
pub fn problems(regions: &[RegionStatus], buffers: &[BufferStatus]) -> Vec<String> {
    let mut out = Vec::new();
    for r in regions {
        if !r.answers {
            out.push(format!(
                "{}: table not answering{}",
                r.region,
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        } else if r.stream_view_type.as_deref() != Some(NEEDED_VIEW_TYPE) {
            out.push(format!(
                "{}: stream view type is {} (Ferry needs {NEEDED_VIEW_TYPE})",
                r.region,
                r.stream_view_type.as_deref().unwrap_or("none (stream off)")
            ));
        }
    }
    // Every drain stops on a destination publishing other settings: name them side by side.
    let published: Vec<&RegionStatus> = regions
        .iter()
        .filter(|r| r.merge_mode.is_some() || r.settings.is_some())
        .collect();
    if published
        .windows(2)
        .any(|w| (&w[0].merge_mode, &w[0].settings) != (&w[1].merge_mode, &w[1].settings))
    {
        let each: Vec<String> = published
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.region,
                    r.merge_mode.as_deref().unwrap_or("-"),
                    r.settings.as_deref().unwrap_or("-")
                )
            })
            .collect();
        out.push(format!(
            "regions publish different replication settings ({}): the drains between them stop (docs/operations.md#settings-mismatch)",
            each.join(", ")
        ));
    }
    for b in buffers {
        if b.dlq.total() > 0 {
            out.push(format!(
                "{} → {}: {} message(s) in the DLQ (ferry dlq list --from {} --to {})",
                b.source,
                b.destination,
                b.dlq.total(),
                b.source,
                b.destination
            ));
        }
        if let Some(left) = b.paused.as_ref().and_then(|p| p.expires_in_s) {
            if left < PAUSE_WARNING_S {
                out.push(format!(
                    "{} → {}: paused, and held changes expire in {} (ferry resume --from {} --to {})",
                    b.source,
                    b.destination,
                    span(left),
                    b.source,
                    b.destination
                ));
            }
        }
        if b.buffer.total() > 0 && !b.destination_answers {
            out.push(format!(
                "{} → {}: {} message(s) waiting for an unreachable destination",
                b.source,
                b.destination,
                b.buffer.total()
            ));
        }
    }
    out
}

async fn peek(queue: &Buffer) -> Result<Sample, OpsError> {
    let got = queue
        .receive_with_attributes(10, 0, Some(0), &[RECORDS_ATTRIBUTE])
        .await?;
    Ok(Sample {
        oldest_sent_ms: got
            .iter()
            .map(|m| m.message.sent_at_ms)
            .filter(|t| *t > 0)
            .min(),
        messages: got.len() as u64,
        records: got
            .iter()
            .map(|m| m.number(RECORDS_ATTRIBUTE).unwrap_or(1))
            .sum(),
        // A body that does not unpack counts nothing (the drain dead-letters it).
        units: got
            .iter()
            .filter_map(|m| ferry_core::buffer::unpack(&m.message.body).ok())
            .flatten()
            .map(|r| u64::from(write_units(&r.image)))
            .sum(),
    })
}

pub async fn run(
    target: &Target,
    regions: &[String],
    with_peek: bool,
) -> Result<StatusReport, OpsError> {
    run_capped(target, regions, with_peek, None).await
}

/// [`run`], with `max_wcu` as every pair's cap (`None`: each stack's, if any; 0: none).
pub async fn run_capped(
    target: &Target,
    regions: &[String],
    with_peek: bool,
    max_wcu: Option<f64>,
) -> Result<StatusReport, OpsError> {
    let regions = target.regions(regions)?;
    let mut report = StatusReport {
        table: target.table_name.clone(),
        oldest_age_source: if with_peek {
            "oldest SentTimestamp among up to 10 peeked messages (SQS has no such attribute)".into()
        } else {
            "not measured: SQS exposes it only as a CloudWatch metric; --peek samples it".into()
        },
        ..Default::default()
    };
    for r in &regions {
        report.regions.push(region_status(target, r).await);
    }
    let now = ferry_core::clock::system_now_ms();
    for s in &regions {
        for d in regions.iter().filter(|d| *d != s) {
            let destination_answers = report.regions.iter().any(|r| r.region == *d && r.answers);
            let cap = match max_wcu {
                Some(cap) => Some(cap).filter(|c| *c > 0.0),
                None => target.stacks.get(s).and_then(|st| st.max_wcu),
            };
            let buffer = buffer_status(target, (s, d), destination_answers, with_peek, now).await?;
            report.buffers.push(with_cap(buffer, cap));
        }
    }
    report.problems = problems(&report.regions, &report.buffers);
    report.healthy = report.problems.is_empty();
    Ok(report)
}

/// Whether the region's table answers (within 5 s), its stream's view type and the tags its
/// enqueue publishes.
async fn region_status(target: &Target, region: &str) -> RegionStatus {
    let table = target.table(region).await;
    let described = tokio::time::timeout(Duration::from_secs(5), table.describe()).await;
    match described {
        Ok(Ok(d)) => {
            let tags = match &d.arn {
                Some(arn) => table.tags(arn).await.unwrap_or_default(),
                None => Vec::new(),
            };
            let tag = |name: &str| tags.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            RegionStatus {
                region: region.to_string(),
                answers: true,
                error: None,
                stream_view_type: d.stream_view_type,
                merge_mode: tag(ferry_core::peer::TAG_MERGE_MODE),
                settings: tag(ferry_core::peer::TAG_SETTINGS),
            }
        }
        // A refused identity is not a table that is down: the error says which and what to fix.
        Ok(Err(e)) => RegionStatus::silent(
            region,
            e.context(format_args!("{region} table {}", table.name))
                .to_string(),
        ),
        Err(_) => RegionStatus::silent(region, "timed out".into()),
    }
}

impl RegionStatus {
    /// A region whose table did not answer, and why.
    fn silent(region: &str, error: String) -> RegionStatus {
        RegionStatus {
            region: region.to_string(),
            answers: false,
            error: Some(error),
            stream_view_type: None,
            merge_mode: None,
            settings: None,
        }
    }
}

/// The depths of the buffer from `source` to `destination` and of its DLQ, with the peek's
/// estimates when asked for.
async fn buffer_status(
    target: &Target,
    (source, destination): (&str, &str),
    destination_answers: bool,
    with_peek: bool,
    now_ms: u64,
) -> Result<BufferStatus, OpsError> {
    let (buffer, dlq) = target.queues(source, destination).await?;
    let depth = buffer.depth().await?;
    let dlq_depth = dlq.depth().await?;
    let paused = match buffer.pause().await? {
        Some(p) => Some(PausedPair::of(&p, buffer.retention_s().await?, now_ms)),
        None => None,
    };
    let sample = if with_peek {
        Some(peek(&buffer).await?)
    } else {
        None
    };
    let (oldest_age_s, approx_records) = match &sample {
        Some(sample) => estimate(&depth, sample, now_ms),
        None => (None, None),
    };
    Ok(BufferStatus {
        source: source.to_string(),
        destination: destination.to_string(),
        buffer: depth,
        dlq: dlq_depth,
        oldest_age_s,
        approx_records,
        destination_answers,
        paused,
        cap: None,
        sample,
    })
}

/// The pair's cap and what it costs, from the depth and the peek's sample.
fn with_cap(mut b: BufferStatus, cap: Option<f64>) -> BufferStatus {
    b.cap = cap.map(|c| CappedPair::of(c, &b.buffer, b.sample.as_ref()));
    b
}

pub async fn main(args: StatusArgs) -> ExitCode {
    let json = args.json;
    let result = async {
        let target = Target::connect(&args.target).await?;
        run_capped(&target, &args.regions, args.peek, args.max_wcu).await
    }
    .await;
    finish("status", json, result, render, |r| {
        if r.healthy {
            EXIT_OK
        } else {
            EXIT_FOUND
        }
    })
}

pub fn render(r: &StatusReport) -> String {
    let mut out = format!("ferry status: table {}\n", r.table);
    for g in &r.regions {
        out += &format!(
            "  {:<16} {}  stream {}  mode {} ({})\n",
            g.region,
            if g.answers {
                "answers"
            } else {
                "NOT ANSWERING"
            },
            g.stream_view_type.as_deref().unwrap_or("-"),
            g.merge_mode.as_deref().unwrap_or("unpublished"),
            g.settings.as_deref().unwrap_or("-")
        );
    }
    out += &format!(
        "  {:<36} {:>8} {:>9} {:>8} {:>8} {:>10} {:>6}  dest\n",
        "buffer", "visible", "in flight", "delayed", "records", "oldest", "dlq"
    );
    let opt = |v: Option<u64>, unit: &str| v.map(|v| format!("{v}{unit}")).unwrap_or("-".into());
    for b in &r.buffers {
        out += &format!(
            "  {:<36} {:>8} {:>9} {:>8} {:>8} {:>10} {:>6}  {}\n",
            format!("{} → {}", b.source, b.destination),
            b.buffer.visible,
            b.buffer.in_flight,
            b.buffer.delayed,
            opt(b.approx_records, ""),
            opt(b.oldest_age_s, " s"),
            b.dlq.total(),
            if b.destination_answers { "up" } else { "DOWN" }
        );
    }
    for b in &r.buffers {
        if let Some(p) = &b.paused {
            out += &format!(
                "  PAUSED {} → {}{}: for {}; held changes expire in {} (retention {})\n",
                b.source,
                b.destination,
                if p.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.note)
                },
                p.for_s.map_or("an unknown time".into(), span),
                p.expires_in_s.map_or("at most the retention".into(), span),
                span(p.retention_s),
            );
        }
    }
    for b in &r.buffers {
        if let Some(c) = &b.cap {
            let cost = match (c.waiting_units, c.drains_in_s) {
                (Some(u), Some(s)) => {
                    format!("~{u} write units waiting, ~{} to drain at the cap", span(s))
                }
                _ => "--peek estimates the write units waiting and the lag the cap adds".into(),
            };
            out += &format!(
                "  CAPPED {} → {}: {} write units/s; {cost}\n",
                b.source, b.destination, c.max_wcu
            );
        }
    }
    out += &format!("  (oldest: {})\n", r.oldest_age_source);
    if r.healthy {
        out += "  healthy\n";
    }
    for p in &r.problems {
        out += &format!("  problem: {p}\n");
    }
    out
}

/// `3 d 4 h`, `5 h 2 m`, `42 s`: a span as an operator reads it.
fn span(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} m", s / 60),
        7_200..=172_799 => format!("{} h {} m", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_from_a_sample() {
        let depth = QueueDepth {
            visible: 8,
            in_flight: 2,
            delayed: 0,
        };
        let sample = Sample {
            oldest_sent_ms: Some(10_000),
            messages: 4,
            records: 100,
            units: 120,
        };
        assert_eq!(estimate(&depth, &sample, 70_000), (Some(60), Some(250)));
        assert_eq!(estimate(&depth, &Sample::default(), 70_000), (None, None));
        // Under a cap of 150 units/s: 10 messages × 30 units each take 2 s.
        let capped = CappedPair::of(150.0, &depth, Some(&sample));
        assert_eq!(
            (capped.waiting_units, capped.drains_in_s),
            (Some(300), Some(2))
        );
        // Without a peek, the cap alone.
        let blind = CappedPair::of(150.0, &depth, None);
        assert_eq!((blind.waiting_units, blind.drains_in_s), (None, None));
    }

    #[test]
    fn problems_name_what_to_look_at() {
        let up = |r: &str, view: Option<&str>| RegionStatus {
            region: r.into(),
            answers: true,
            error: None,
            stream_view_type: view.map(str::to_string),
            merge_mode: None,
            settings: None,
        };
        let buffer = |dlq: u64, waiting: u64, answers: bool| BufferStatus {
            source: "a".into(),
            destination: "b".into(),
            buffer: QueueDepth {
                visible: waiting,
                ..Default::default()
            },
            dlq: QueueDepth {
                visible: dlq,
                ..Default::default()
            },
            oldest_age_s: None,
            approx_records: None,
            destination_answers: answers,
            paused: None,
            cap: None,
            sample: None,
        };
        let good = [
            up("a", Some(NEEDED_VIEW_TYPE)),
            up("b", Some(NEEDED_VIEW_TYPE)),
        ];
        assert!(problems(&good, &[buffer(0, 5, true)]).is_empty());
        let p = problems(&[up("a", Some("KEYS_ONLY"))], &[buffer(2, 5, false)]);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("KEYS_ONLY"));
        assert!(p[1].contains("DLQ"));
        assert!(p[2].contains("unreachable"));

        // A pause is the operator's choice: a problem only when held changes near expiry.
        let paused = |left_s: u64| BufferStatus {
            paused: Some(PausedPair {
                note: "restore".into(),
                for_s: Some(1_209_600 - left_s),
                retention_s: 1_209_600,
                expires_in_s: Some(left_s),
            }),
            ..buffer(0, 5, true)
        };
        assert!(problems(&good, &[paused(86_400 * 3)]).is_empty());
        let p = problems(&good, &[paused(3_600)]);
        assert!(
            p[0].contains("paused") && p[0].contains("ferry resume"),
            "{p:?}"
        );
        assert_eq!(span(3_600 * 30), "30 h 0 m");
        assert_eq!(span(86_400 * 13 + 3_600), "13 d 1 h");

        // Published settings: unpublished regions are no problem, different ones are.
        let with = |r: &str, mode: &str| RegionStatus {
            merge_mode: Some(mode.into()),
            settings: Some("v1-0123456789abcdef".into()),
            ..up(r, Some(NEEDED_VIEW_TYPE))
        };
        let same = [
            with("a", "item"),
            with("b", "item"),
            up("c", Some(NEEDED_VIEW_TYPE)),
        ];
        assert!(problems(&same, &[]).is_empty());
        let p = problems(&[with("a", "item"), with("b", "attribute")], &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("a item") && p[0].contains("b attribute"),
            "{p:?}"
        );
    }
}
