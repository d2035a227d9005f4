//! The convergence checker in `make test`: a few thousand random histories must converge and keep
//! causality under the contract's rules, and every known-wrong rule of the contract ("Checked" in
//! `docs/contract.md`) must be caught — a checker that cannot fail proves nothing.
//!
//! The full run is `make check-convergence N=100000` (release build, printed seed, replayable).

use ferry_check::{regions_for, run_history, AttributeHole, CheckOptions, Hole, Verdict};
use ferry_core::MergeMode;

/// Skew between regions' clocks larger than the replication delay: the floor and the lift only
/// matter when a region's clock is behind a version it has seen.
const LARGE_SKEW_MS: u64 = 3_000;

/// Under clock skew larger than the replication delay the contract promises convergence, not
/// full causality: "an unstamped write or hard delete can lose to a concurrent older one"
/// (`docs/contract.md`, Known limits). Helper-stamped writes must still never be lost.
fn documented_limit_under_skew(verdict: &Verdict) -> bool {
    matches!(
        verdict,
        Verdict::LostAfter {
            helper_only: false,
            ..
        }
    )
}

fn assert_clean(runs: u64, seed: u64, options: &CheckOptions) {
    let large_skew = options.skew_ms >= LARGE_SKEW_MS;
    let mut limits = 0;
    for s in seed..seed + runs {
        let regions = regions_for(s);
        let verdict = run_history(s, regions, options);
        if verdict.is_ok() {
            continue;
        }
        if large_skew && documented_limit_under_skew(&verdict) {
            limits += 1;
            continue;
        }
        panic!(
            "seed {s} ({regions} regions, skew {} ms): {verdict}\n\
             replay: cargo run --release -p ferry-check --example check_convergence -- \
             --runs 1 --seed {s} --skew {} --trace",
            options.skew_ms, options.skew_ms
        );
    }
    eprintln!(
        "{runs} histories from seed {seed}, skew {} ms: clean ({limits} plain writes lost to \
         older ones under skew, the documented limit)",
        options.skew_ms
    );
    if !large_skew {
        assert_eq!(limits, 0);
    }
}

#[test]
fn histories_converge_under_the_contract() {
    assert_clean(2_000, 20_261_125, &CheckOptions::default());
}

#[test]
fn histories_converge_under_large_clock_skew() {
    let options = CheckOptions {
        skew_ms: LARGE_SKEW_MS,
        ..CheckOptions::default()
    };
    assert_clean(1_000, 90_001, &options);
}

#[test]
fn histories_converge_with_heavy_contention() {
    // One shared key written everywhere, many duplicates, frequent quiet checkpoints.
    let options = CheckOptions {
        shared_keys: 1,
        own_key_share: 0.1,
        duplicate_share: 0.4,
        checkpoint_share: 0.05,
        ..CheckOptions::default()
    };
    assert_clean(500, 777, &options);
}

#[test]
fn histories_converge_with_concurrent_drains_of_one_buffer() {
    // Four drains per buffer, their takes, writes and settles interleaved; few keys, so takes
    // of different drains carry the same keys.
    let options = CheckOptions {
        drains: 4,
        shared_keys: 2,
        ..CheckOptions::default()
    };
    assert_clean(500, 4_004, &options);
}

/// Each known-wrong rule, switched on alone, must produce a failing history within a bounded
/// number of seeds — one the contract's rules pass — and the failure must replay from its seed.
/// The floor and the lift only matter under skew larger than the replication delay.
#[test]
fn every_known_wrong_rule_is_caught() {
    for hole in Hole::ALL {
        let mut options = CheckOptions::with_holes(&[hole]);
        let needs_skew = matches!(hole, Hole::NoFloor | Hole::NoLift);
        if needs_skew {
            options.skew_ms = LARGE_SKEW_MS;
        }
        let contract = CheckOptions {
            holes: Vec::new(),
            ..options.clone()
        };
        // A rare hole (about 1 history in 100 000) is searched from near its first known seed.
        let start = match hole {
            Hole::DeleteTombstoneStands => 43_000,
            _ => 1,
        };
        let caught = (start..start + 2_000).find_map(|seed| {
            let regions = regions_for(seed);
            let verdict = run_history(seed, regions, &options);
            let allowed = verdict.is_ok() || needs_skew && documented_limit_under_skew(&verdict);
            (!allowed && run_history(seed, regions, &contract).is_ok())
                .then_some((seed, regions, verdict))
        });
        let Some((seed, regions, verdict)) = caught else {
            panic!(
                "hole {} ({}) survived 2 000 histories: the checker cannot see it",
                hole.name(),
                hole.describe()
            );
        };
        eprintln!(
            "hole {}: caught at seed {seed}: {}",
            hole.name(),
            verdict.name()
        );
        assert_eq!(
            run_history(seed, regions, &options),
            verdict,
            "seed {seed} replays the same verdict for {}",
            hole.name()
        );
    }
}

/// Attribute merge mode (`docs/attribute-merge.md`): histories converge and lose no
/// acknowledged attribute write — disjoint-attribute concurrent writes all survive.
fn attribute_mode(skew_ms: u64) -> CheckOptions {
    CheckOptions {
        merge_mode: MergeMode::Attribute,
        skew_ms,
        ..CheckOptions::default()
    }
}

#[test]
fn attribute_mode_converges_and_loses_no_update() {
    assert_clean(600, 10_010, &attribute_mode(60));
    assert_clean(300, 20_020, &attribute_mode(LARGE_SKEW_MS));
}

/// Each of attribute mode's known-wrong rules is caught, and only by its hole.
#[test]
fn every_known_wrong_attribute_rule_is_caught() {
    for hole in AttributeHole::ALL {
        let contract = attribute_mode(60);
        let options = CheckOptions {
            attribute_holes: vec![hole],
            ..contract.clone()
        };
        let caught = (1..=300).find_map(|seed| {
            let regions = regions_for(seed);
            let verdict = run_history(seed, regions, &options);
            (!verdict.is_ok() && run_history(seed, regions, &contract).is_ok()).then_some(verdict)
        });
        let Some(verdict) = caught else {
            panic!("attribute hole {hole} survived 300 histories: the checker cannot see it");
        };
        eprintln!("attribute hole {hole}: caught: {}", verdict.name());
    }
}
