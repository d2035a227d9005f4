//! The item codec (`ferry_core::codec`): Ferry's binary encoding of items and change records,
//! the inside of every buffer message. The first byte says what the rest is: 0 an encoded item
//! (`decode_item`), 1 an encoded record (`Reader::record`, in both number encodings), 2 bytes
//! that a record is built from (the encoder's side: `put_record`, then `pack`). Decoding never
//! panics nor holds more memory than the input justifies (`ferry_fuzz::justified`); whatever
//! decodes re-encodes and decodes to the same value, never longer than it was.
#![no_main]

use ferry_core::codec::{self, Numbers, Reader};
use ferry_core::item::{describe_key, ItemKey};
use ferry_fuzz::{assert_packs_back, assert_record_round_trips, within_justified, Bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(item) = within_justified(rest.len(), || codec::decode_item(rest)) else {
                return;
            };
            let again = codec::encode_item(&item);
            // Shorter only where the input named an attribute twice (the last one stands).
            assert!(again.len() <= rest.len(), "re-encoded longer");
            assert_eq!(codec::decode_item(&again).as_ref(), Ok(&item));
            let _ = (ItemKey::of(&item), describe_key(&item));
        }
        1 => {
            for numbers in [Numbers::Packed, Numbers::Text] {
                let mut reader = Reader::with_numbers(rest, numbers);
                if let Ok(record) = within_justified(rest.len(), || reader.record()) {
                    assert_record_round_trips(&record);
                    let _ = (ItemKey::of(&record.key), record.encoded_len());
                }
            }
        }
        _ => {
            let record = Bytes(rest).record();
            assert_record_round_trips(&record);
            assert_packs_back(std::slice::from_ref(&record));
        }
    }
});
