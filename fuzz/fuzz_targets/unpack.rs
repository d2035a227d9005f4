//! `buffer::unpack`, the SQS message body a drain receives. The first byte says what the rest
//! is, so the mutations reach every layer: 0 the body text itself (base64), 1 the frame
//! (`FRY ‖ format ‖ size ‖ lz4 block`, base64'd here), 2 the raw payload (`count ‖ records`,
//! framed here as format 2, or format 1 with the high bit set). Whatever it is: a typed error or
//! records, never a panic, never more memory held than the payload justifies
//! (`ferry_fuzz::justified`; libFuzzer's `-malloc_limit_mb` for bodies of unknown payload);
//! accepted records pack and unpack back the same.
#![no_main]

use base64::Engine;
use ferry_core::buffer::{unpack, FORMAT_V1_TEXT_NUMBERS, FORMAT_VERSION};
use ferry_fuzz::{assert_packs_back, body_of_payload, within_justified, B64};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Only a payload given as is has a known size to hold the decoder to (anything else is
    // held to libFuzzer's -malloc_limit_mb, and MAX_PAYLOAD_BYTES bounds what it inflates to).
    let payload_len = (mode % 3 == 2).then_some(rest.len());
    let body = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
        1 => B64.encode(rest),
        _ => {
            let format = if mode & 0x80 == 0 {
                FORMAT_VERSION
            } else {
                FORMAT_V1_TEXT_NUMBERS
            };
            body_of_payload(rest, format)
        }
    };
    let unpacked = match payload_len {
        Some(len) => within_justified(len + body.len(), || unpack(&body)),
        None => unpack(&body),
    };
    if let Ok(records) = unpacked {
        assert_packs_back(&records);
    }
});
