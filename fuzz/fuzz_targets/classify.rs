//! Stream-record classification (`ferry_core::classify`, feature `stream`): a DynamoDB stream
//! record as Lambda hands it to enqueue (DynamoDB JSON deserialized into `aws_lambda_events`'
//! `EventRecord`), classified in item mode and in attribute mode. Never a panic; the decision is
//! the same whether the record is borrowed or moved; a forwarded record travels a buffer intact.
#![no_main]

use aws_lambda_events::event::dynamodb::EventRecord;
use ferry_core::{classify, Classified};
use ferry_fuzz::{assert_packs_back, configs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<EventRecord>(data) else {
        return;
    };
    for config in configs() {
        let borrowed = classify(&record, config);
        let moved = classify(record.clone(), config);
        assert_eq!(
            borrowed, moved,
            "borrowed and moved records classified differently"
        );
        if let Ok(Classified::Forward(forward)) = borrowed {
            assert_packs_back(std::slice::from_ref(&forward));
        }
    }
});
