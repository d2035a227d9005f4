//! `ferry dlq list|show`'s reading of a DLQ message (`ferry_cli::ops::dlq::describe`): its
//! message attributes (`name=value` lines, then a NUL) and its body (the rest), both as SQS
//! hands them over, UTF-8. Never a panic; a body is readable exactly when `unpack` reads it,
//! and the entry serializes for `--json`.
#![no_main]

use ferry_aws::{Received, ReceivedWithAttributes};
use ferry_cli::ops::dlq::describe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let (Ok(head), Ok(body)) = (std::str::from_utf8(head), std::str::from_utf8(body)) else {
        return;
    };
    let attributes = head
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let message = ReceivedWithAttributes {
        message: Received {
            message_id: "m-1".into(),
            receipt_handle: "r-1".into(),
            body: body.into(),
            receive_count: 1,
            sent_at_ms: 1_700_000_000_000,
        },
        attributes,
    };
    let readable = ferry_core::buffer::unpack(body).is_ok();
    for with_images in [false, true] {
        let entry = describe(&message, 1_700_000_060_000, with_images);
        assert_eq!(entry.readable, readable);
        serde_json::to_string(&entry).expect("a DLQ entry serializes");
    }
});
