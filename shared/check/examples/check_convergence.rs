//! Runs the randomized convergence checker: `--runs N --seed S [--hole NAME]... [--skew MS]`.
//!
//! Histories use seeds S, S+1, …, S+N-1; a failing seed replays alone with `--runs 1 --seed F`
//! (add `--trace` to print what happened, step by step). Exit code 1 when any history fails.

use ferry_check::{check, trace_history, AttributeHole, CheckOptions, Hole, Summary};
use ferry_core::MergeMode;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: check_convergence [--runs N] [--seed S] [--hole NAME]... [--skew MS] \
[--merge item|attribute] [--steps N] [--ttl-share F] [--duplicates F] [--checkpoints F] [--keys 1-8] [--own-share F] [--app-writes F] [--no-filter] [--identical-restores] [--write-time-floor] [--late-ttl] [--unstamped-puts] [--threads T] [--drains N] [--trace]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}\n{USAGE}\nholes:");
            for hole in Hole::ALL {
                eprintln!("  {:<24} {}", hole.name(), hole.describe());
            }
            for hole in AttributeHole::ALL {
                eprintln!("  {:<24} {}", hole.name(), hole.describe());
            }
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut runs: u64 = 5000;
    let mut seed: u64 = 0;
    let mut threads: u64 = 1;
    let mut trace = false;
    let mut options = CheckOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--runs" => runs = number(&value("--runs")?)?,
            "--seed" => seed = number(&value("--seed")?)?,
            "--skew" => options.skew_ms = number(&value("--skew")?)?,
            "--steps" => options.steps = number(&value("--steps")?)? as usize,
            "--threads" => threads = number(&value("--threads")?)?.max(1),
            "--keys" => options.shared_keys = number(&value("--keys")?)? as usize,
            "--own-share" => {
                let v = value("--own-share")?;
                options.own_key_share =
                    v.parse::<f64>()
                        .ok()
                        .filter(|f| (0.0..=1.0).contains(f))
                        .ok_or(format!("--own-share {v}: not a share between 0 and 1"))?;
            }
            "--checkpoints" => {
                let v = value("--checkpoints")?;
                options.checkpoint_share = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or(format!("--checkpoints {v}: not a share between 0 and 1"))?;
            }
            "--duplicates" => {
                let v = value("--duplicates")?;
                options.duplicate_share = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| (0.0..1.0).contains(f))
                    .ok_or(format!("--duplicates {v}: not a share in [0, 1)"))?;
            }
            "--ttl-share" => {
                let v = value("--ttl-share")?;
                options.ttl_share = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or(format!("--ttl-share {v}: not a share between 0 and 1"))?;
            }
            "--merge" => {
                let v = value("--merge")?;
                options.merge_mode = MergeMode::parse(&v).map_err(|e| e.to_string())?;
            }
            "--hole" => {
                let name = value("--hole")?;
                match (Hole::parse(&name), AttributeHole::parse(&name)) {
                    (Some(hole), _) => options.holes.push(hole),
                    (None, Some(hole)) => options.attribute_holes.push(hole),
                    (None, None) => return Err(format!("unknown hole `{name}`")),
                }
            }
            "--trace" => trace = true,
            "--stale-write-backs" => options.stale_write_backs = true,
            "--early-ttl" => options.early_ttl = true,
            "--write-time-floor" => options.stale_write_backs = false,
            "--late-ttl" => options.early_ttl = false,
            "--no-filter" => options.filter_removes = false,
            "--identical-restores" => options.identical_restores = true,
            "--drains" => options.drains = number(&value("--drains")?)?.clamp(1, 16) as usize,
            "--app-writes" => {
                let v = value("--app-writes")?;
                options.app_writes = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or(format!("--app-writes {v}: not a share between 0 and 1"))?;
            }
            "--unstamped-puts" => options.unstamped_puts = true,
            "-h" | "--help" => return Err("the convergence checker".into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let holes: Vec<&str> = options
        .holes
        .iter()
        .map(|h| h.name())
        .chain(options.attribute_holes.iter().map(|h| h.name()))
        .collect();
    println!(
        "checking {runs} histories from seed {seed} ({} merge, skew {} ms, holes {holes:?})",
        options.merge_mode, options.skew_ms
    );
    let started = Instant::now();
    let summary = run_parallel(runs, seed, threads, &options);
    println!("{summary}");
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
    let Some((failing, regions, verdict)) = &summary.first_failure else {
        return Ok(ExitCode::SUCCESS);
    };
    println!("first failing seed {failing} ({regions} regions): {verdict}");
    for (name, seeds) in &summary.examples {
        println!("  seeds failing as '{name}': {seeds:?}");
    }
    println!(
        "replay: --runs 1 --seed {failing}{}",
        replay_flags(&options)
    );
    if trace {
        let (_, log) = trace_history(*failing, *regions, &options);
        for line in log {
            println!("  {line}");
        }
    }
    Ok(ExitCode::from(1))
}

/// Splits the seeds into contiguous ranges, one per thread; the first failure is the lowest seed.
fn run_parallel(runs: u64, seed: u64, threads: u64, options: &CheckOptions) -> Summary {
    let per = runs.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = seed + t * per;
                let count = per.min(runs.saturating_sub(t * per));
                scope.spawn(move || check(count, start, options))
            })
            .collect();
        let mut summary = Summary::default();
        for handle in handles {
            match handle.join() {
                Ok(part) => summary.merge(part),
                Err(_) => eprintln!("a checker thread panicked"),
            }
        }
        summary
    })
}

fn replay_flags(options: &CheckOptions) -> String {
    let defaults = CheckOptions::default();
    let mut flags = String::new();
    if options.merge_mode != defaults.merge_mode {
        flags.push_str(&format!(" --merge {}", options.merge_mode));
    }
    for hole in &options.holes {
        flags.push_str(&format!(" --hole {hole}"));
    }
    for hole in &options.attribute_holes {
        flags.push_str(&format!(" --hole {hole}"));
    }
    if options.skew_ms != defaults.skew_ms {
        flags.push_str(&format!(" --skew {}", options.skew_ms));
    }
    if options.steps != defaults.steps {
        flags.push_str(&format!(" --steps {}", options.steps));
    }
    if options.ttl_share != defaults.ttl_share {
        flags.push_str(&format!(" --ttl-share {}", options.ttl_share));
    }
    if options.shared_keys != defaults.shared_keys {
        flags.push_str(&format!(" --keys {}", options.shared_keys));
    }
    if options.own_key_share != defaults.own_key_share {
        flags.push_str(&format!(" --own-share {}", options.own_key_share));
    }
    if options.checkpoint_share != defaults.checkpoint_share {
        flags.push_str(&format!(" --checkpoints {}", options.checkpoint_share));
    }
    if options.duplicate_share != defaults.duplicate_share {
        flags.push_str(&format!(" --duplicates {}", options.duplicate_share));
    }
    if !options.stale_write_backs {
        flags.push_str(" --write-time-floor");
    }
    if !options.early_ttl {
        flags.push_str(" --late-ttl");
    }
    if !options.filter_removes {
        flags.push_str(" --no-filter");
    }
    if options.identical_restores {
        flags.push_str(" --identical-restores");
    }
    if options.app_writes != defaults.app_writes {
        flags.push_str(&format!(" --app-writes {}", options.app_writes));
    }
    if options.unstamped_puts {
        flags.push_str(" --unstamped-puts");
    }
    flags
}

fn number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a number"))
}
