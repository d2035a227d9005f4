//! `ferry backfill --resume`'s checkpoint file (`ferry_cli::ops::backfill::Checkpoint`), read as
//! `Checkpoint::load` reads it (UTF-8 text, then JSON), then used as `--resume` uses it: checked
//! against the run's own checkpoint, and its segment starts decoded (each a base64 key in
//! Ferry's item encoding). Never a panic; a checkpoint saves and loads back the same.
#![no_main]

use ferry_cli::ops::backfill::Checkpoint;
use ferry_core::MergeMode;
use libfuzzer_sys::fuzz_target;

/// `ferry backfill --segments` takes 1..=1000000.
const MAX_SEGMENTS: u32 = 1_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(saved) = serde_json::from_str::<Checkpoint>(text) else {
        return;
    };
    let again = serde_json::to_string_pretty(&saved).expect("a checkpoint saves");
    let loaded: Checkpoint = serde_json::from_str(&again).expect("a saved checkpoint loads");
    assert_eq!(loaded, saved);
    let other_run = Checkpoint::new(
        "orders",
        "us-east-1",
        &["eu-west-1".to_string()],
        4,
        MergeMode::Item,
    );
    let _ = saved.check_same(&other_run);
    // The run that resumes it passes the same arguments (its --segments within bounds).
    if saved.segments == 0 || saved.segments > MAX_SEGMENTS {
        return;
    }
    let Ok(mode) = MergeMode::parse(&saved.merge_mode) else {
        return;
    };
    let this_run = Checkpoint::new(&saved.table, &saved.from, &saved.to, saved.segments, mode);
    if saved.check_same(&this_run).is_ok() {
        if let Ok(starts) = saved.starts() {
            assert!(starts.len() <= saved.segments as usize);
        }
        let _ = saved.is_complete();
    }
});
