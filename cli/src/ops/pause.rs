//! `ferry pause` and `ferry resume`: stop applying to a destination while the pair's buffer
//! keeps every change, then let the next drain tick replay the backlog with its normal fan-out.
//! The mark is a tag on each pair's buffer (`ferry_core::pause`), so the same command works on
//! `ferry local up` and on a deployed stack, and `ferry status` shows it.
//!
//! Only the destination side pauses: the stream that feeds the enqueue keeps records for 24
//! hours and no more, so a paused stream trigger loses changes after a day, while a buffer keeps
//! them for its retention (the template sets the SQS maximum, 14 days).

use super::target::{Target, TargetArgs};
use super::{finish, OpsError, EXIT_OK};
use clap::Args;
use ferry_core::pause::Pause;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Args, Clone, Debug)]
pub struct PauseArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The source region of the pairs (`--from A`: every pair out of A).
    #[arg(long)]
    pub from: Option<String>,
    /// The destination region of the pairs (`--to B`: every pair into B, e.g. while B's
    /// table is being restored).
    #[arg(long)]
    pub to: Option<String>,
    /// Every region of the cluster, comma-separated, when `--from` or `--to` stands alone
    /// (with --local: the sandbox's regions).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Why, and who: kept on the mark and shown by `ferry status` (pause only).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Refused: pausing the stream trigger (the source side) would lose changes after the
    /// stream's 24 hours; pause the destination side instead (the default).
    #[arg(long)]
    pub stream: bool,
    /// Print JSON instead of the human report.
    #[arg(long)]
    pub json: bool,
}

/// One pair's mark after the command.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PairPause {
    pub source: String,
    pub destination: String,
    pub paused: bool,
    /// Messages waiting in the buffer (what a resume replays).
    pub backlog: u64,
    /// How long the buffer keeps a message (s).
    pub retention_s: u64,
    /// Messages still held by a drain when the command returned (pause waits for 0: every
    /// drain has seen the mark and settled its take).
    pub in_flight: u64,
}

/// How long `ferry pause` waits for the drains to let go of what they hold: a drain reads the
/// mark with each ping of the destination (every 5 s) and after a long poll (a take received
/// more than 5 s after its last read), then settles its take.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(90);
/// Every drain has read the mark this long after it was set.
const MARK_SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(11);

#[derive(Clone, Debug, Serialize, Default)]
pub struct PauseReport {
    pub pairs: Vec<PairPause>,
}

/// The pairs `--from`/`--to` select among `regions` (pure).
pub fn select_pairs(
    from: Option<&str>,
    to: Option<&str>,
    regions: &[String],
) -> Result<Vec<(String, String)>, String> {
    match (from, to) {
        (None, None) => Err("name the pairs: --from REGION and/or --to REGION".into()),
        (Some(f), Some(t)) if f == t => Err(format!("--from and --to are both {f}")),
        (Some(f), Some(t)) => Ok(vec![(f.to_string(), t.to_string())]),
        (f, t) => {
            let named = f.or(t).unwrap_or_default();
            if !regions.iter().any(|r| r == named) {
                return Err(format!(
                    "{named} is not among the regions ({}): give --regions",
                    regions.join(", ")
                ));
            }
            let others = regions.iter().filter(|r| *r != named).cloned();
            Ok(match f {
                Some(_) => others.map(|d| (named.to_string(), d)).collect(),
                None => others.map(|s| (s, named.to_string())).collect(),
            })
        }
    }
}

/// Sets (`pause` true) or clears the mark on every selected pair's buffer.
pub async fn run(target: &Target, args: &PauseArgs, pause: bool) -> Result<PauseReport, OpsError> {
    if args.stream {
        return Err(OpsError::Usage(
            "the stream trigger is not paused: a DynamoDB stream keeps records for 24 hours, \
             after which changes would be lost; `ferry pause` pauses the destination side, whose \
             buffer keeps every change for its retention (up to 14 days)"
                .into(),
        ));
    }
    let regions = if args.from.is_some() && args.to.is_some() {
        Vec::new()
    } else {
        target.regions(&args.regions)?
    };
    let pairs = select_pairs(args.from.as_deref(), args.to.as_deref(), &regions)
        .map_err(OpsError::Usage)?;
    let now = ferry_core::clock::system_now_ms();
    let mut report = PauseReport::default();
    for (source, destination) in pairs {
        let (buffer, _) = target.queues(&source, &destination).await?;
        let context = |e: ferry_aws::AwsError| e.context(format_args!("{source} → {destination}"));
        if pause {
            buffer
                .set_pause(&Pause::new(now, &args.note))
                .await
                .map_err(context)?;
        } else {
            buffer.clear_pause().await.map_err(context)?;
        }
        let depth = if pause {
            held_until_let_go(&buffer).await.map_err(context)?
        } else {
            buffer.depth().await.map_err(context)?
        };
        report.pairs.push(PairPause {
            backlog: depth.total(),
            in_flight: depth.in_flight,
            retention_s: buffer.retention_s().await.map_err(context)?,
            paused: buffer.pause().await.map_err(context)?.is_some(),
            source,
            destination,
        });
    }
    Ok(report)
}

/// Waits (up to [`SETTLE_WAIT`]) until no message of the buffer is held by a drain.
async fn held_until_let_go(
    buffer: &ferry_aws::Buffer,
) -> Result<ferry_aws::QueueDepth, ferry_aws::AwsError> {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    tokio::time::sleep(MARK_SEEN_WITHIN).await;
    loop {
        let depth = buffer.depth().await?;
        if depth.in_flight == 0 || tokio::time::Instant::now() >= deadline {
            return Ok(depth);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub async fn main(args: PauseArgs, pause: bool) -> ExitCode {
    let verb = if pause { "pause" } else { "resume" };
    let json = args.json;
    let result = async {
        let target = Target::connect(&args.target).await?;
        run(&target, &args, pause).await
    }
    .await;
    finish(verb, json, result, render, |_| EXIT_OK)
}

pub fn render(r: &PauseReport) -> String {
    let mut out = String::new();
    for p in &r.pairs {
        let days = p.retention_s as f64 / 86_400.0;
        out += &if p.paused && p.in_flight > 0 {
            format!(
                "paused {} → {}: {} messages still held by a drain after {} s (it stops at its \
                 next check; look again with `ferry status`); the buffer keeps every change for \
                 {days:.1} days.\n",
                p.source,
                p.destination,
                p.in_flight,
                SETTLE_WAIT.as_secs()
            )
        } else if p.paused {
            format!(
                "paused {} → {}: nothing is applied; the buffer keeps every change for {days:.1} \
                 days ({} messages waiting). `ferry resume` replays them.\n",
                p.source, p.destination, p.backlog
            )
        } else {
            format!(
                "resumed {} → {}: the next drain tick replays {} messages with its full fan-out.\n",
                p.source, p.destination, p.backlog
            )
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    fn pair(s: &str, d: &str) -> (String, String) {
        (s.to_string(), d.to_string())
    }

    #[test]
    fn one_pair_or_every_pair_out_of_or_into_a_region() {
        assert_eq!(
            select_pairs(Some("a"), Some("b"), &[]),
            Ok(vec![pair("a", "b")])
        );
        assert_eq!(
            select_pairs(Some("a"), None, &regions()),
            Ok(vec![pair("a", "b"), pair("a", "c")])
        );
        assert_eq!(
            select_pairs(None, Some("c"), &regions()),
            Ok(vec![pair("a", "c"), pair("b", "c")])
        );
    }

    #[test]
    fn a_selection_that_names_nothing_says_what_is_missing() {
        assert!(select_pairs(None, None, &regions())
            .unwrap_err()
            .contains("--from"));
        assert!(select_pairs(Some("a"), Some("a"), &regions()).is_err());
        assert!(select_pairs(Some("x"), None, &regions())
            .unwrap_err()
            .contains("--regions"));
    }
}
