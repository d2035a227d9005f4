//! Snapshots of what a user reads first: `ferry --help`, each verb's `--help`, and the errors of
//! flags given wrongly. A change to a flag or its help shows here as a changed file under
//! `tests/snapshots/`; after checking it, rewrite them with
//! `FERRY_UPDATE_SNAPSHOTS=1 cargo test -p ferry-cli --test help`.

use std::path::PathBuf;
use std::process::Command;

/// (snapshot, arguments): help goes to stdout with exit 0; an error to stderr with exit 2.
const CASES: &[(&str, &[&str])] = &[
    ("help", &["--help"]),
    ("local-help", &["local", "--help"]),
    ("local-up-help", &["local", "up", "--help"]),
    ("local-outage-help", &["local", "outage", "--help"]),
    ("demo-help", &["demo", "--help"]),
    ("backfill-help", &["backfill", "--help"]),
    ("verify-help", &["verify", "--help"]),
    ("dlq-help", &["dlq", "--help"]),
    ("dlq-list-help", &["dlq", "list", "--help"]),
    ("conflicts-help", &["conflicts", "--help"]),
    ("conflicts-list-help", &["conflicts", "list", "--help"]),
    ("status-help", &["status", "--help"]),
    ("doctor-help", &["doctor", "--help"]),
    ("error-duration-without-unit", &["demo", "--duration", "30"]),
    (
        "error-duration-bad-unit",
        &["local", "outage", "eu-west-1", "--for", "5d"],
    ),
    ("error-regions-is-a-list", &["demo", "--regions", "3"]),
    ("error-unknown-verb", &["replicate"]),
];

fn snapshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"))
}

/// What the command printed (help on stdout, errors on stderr) and its exit code.
fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run ferry");
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    format!(
        "$ ferry {}\n(exit {})\n{}",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&text)
    )
}

#[test]
fn help_and_errors_match_their_snapshots() {
    let update = std::env::var_os("FERRY_UPDATE_SNAPSHOTS").is_some();
    let mut changed = Vec::new();
    for (name, args) in CASES {
        let got = run(args);
        let path = snapshot_path(name);
        if update {
            std::fs::write(&path, &got).expect("write snapshot");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            eprintln!(
                "--- {} (snapshot)\n{want}\n+++ (now)\n{got}",
                path.display()
            );
            changed.push(*name);
        }
    }
    assert!(
        changed.is_empty(),
        "output changed for {changed:?}: check it, then FERRY_UPDATE_SNAPSHOTS=1 cargo test -p ferry-cli --test help"
    );
}

/// Each option of a help text with the text that describes it: (flag, description).
fn options(help: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let section = help.split("Options:").nth(1).unwrap_or_default();
    for line in section.lines() {
        let trimmed = line.trim_start();
        // `- value: ...` lines list a flag's possible values; they belong to its description.
        if trimmed.starts_with('-') && !trimmed.starts_with("- ") {
            let flag = trimmed
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap_or(trimmed);
            found.push((flag.to_string(), trimmed.to_string()));
        } else if let Some((_, text)) = found.last_mut() {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    found
}

#[test]
fn every_flag_of_local_and_demo_has_an_example() {
    // Switches and closed choices show their values instead.
    const NO_EXAMPLE: &[&str] = &["--help", "--json", "--merge", "--workload"];
    for args in [
        &["local", "up", "--help"][..],
        &["local", "outage", "--help"],
        &["demo", "--help"],
    ] {
        let found = options(&run(args));
        assert!(found.len() > 1, "{args:?}");
        for (flag, text) in found {
            if !NO_EXAMPLE.contains(&flag.as_str()) {
                assert!(
                    text.contains("e.g."),
                    "{args:?}: {flag} has no example: {text}"
                );
            }
        }
    }
}
