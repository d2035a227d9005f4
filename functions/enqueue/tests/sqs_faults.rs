//! SQS failing entries of the enqueue's `SendMessageBatch` (the sandbox's fault proxy in front
//! of moto): the handler reports the earliest record of any message not taken, Lambda resends
//! from there, and once the fault heals every record is on the buffer (duplicates allowed,
//! nothing lost).

use ferry_aws::{Buffer, Table};
use ferry_core::buffer::unpack;
use ferry_core::{AttributeValue, Config, Item, Version};
use ferry_enqueue::synthetic::{event, StreamRecord};
use ferry_enqueue::{handle, Destination, Enqueuer};
use ferry_sandbox::{
    dynamodb_client_with, sqs_client_with, ClientOptions, DynamoRegion, FaultMode, FaultProxy,
    Moto, SqsFaults, TableSpec,
};
use rand::distributions::{Alphanumeric, DistString};
use std::collections::BTreeMap;

const LOCAL: &str = "us-east-1";
const DESTINATION: &str = "eu-west-1";
const TABLE: &str = "ferry-sqs-faults";

fn key(pk: &str) -> Item {
    [("pk".to_string(), AttributeValue::S(pk.into()))].into()
}

#[tokio::test]
async fn failed_send_entries_are_resent_from_the_earliest_and_nothing_is_lost() {
    let moto = Moto::start().await.expect("moto");
    let region = DynamoRegion::start(LOCAL, 0).expect("dynoxide");
    region
        .create_table(&TableSpec::new(TABLE, "pk"))
        .await
        .expect("table");
    let sqs = moto.sqs_client(LOCAL);
    let url = Buffer::create(sqs.clone(), "enqueue-sqs-faults", &[])
        .await
        .expect("queue")
        .queue_url;
    let proxy = FaultProxy::start(&moto.endpoint()).expect("proxy");
    let mut config = Config::new(LOCAL, "pk");
    config.destinations = vec![DESTINATION.to_string()];
    let options = ClientOptions::default();
    let table = Table::new(
        dynamodb_client_with(&region.endpoint(), LOCAL, &options),
        TABLE,
    );
    let buffer = Buffer::new(sqs_client_with(&proxy.endpoint(), LOCAL, &options), &url);
    let destination = Destination {
        region: DESTINATION.to_string(),
        buffer,
    };
    let enqueuer = Enqueuer::new(
        config,
        table,
        vec![destination],
        ferry_core::clock::system(),
    )
    .expect("enqueuer");

    // Incompressible images of ~200 KB: a batch of them packs into several messages.
    let now = ferry_core::clock::system_now_ms();
    let mut rng = rand::thread_rng();
    let mut versions = BTreeMap::new();
    let records: Vec<StreamRecord> = (0..10)
        .map(|i| {
            let pk = format!("big#{i}");
            let version = Version::new(now + i, LOCAL);
            let mut image = key(&pk);
            image.insert(
                "blob".into(),
                AttributeValue::S(Alphanumeric.sample_string(&mut rng, 200_000)),
            );
            version.stamp_into(&mut image, &Default::default());
            versions.insert(pk.clone(), version);
            StreamRecord::insert(&format!("{}", 1000 + i), &key(&pk), &image)
        })
        .collect();

    // The first invocation loses every entry; later ones half of them.
    let failing = |fraction| {
        FaultMode::Sqs(SqsFaults {
            send_entries: fraction,
            ..Default::default()
        })
    };
    proxy.set_mode(failing(1.0));
    let mut from = 0;
    let mut runs = 0;
    let mut partial = 0;
    let mut forwarded = 0;
    while from < records.len() {
        runs += 1;
        assert!(runs <= 40, "still failing after 40 resends");
        if runs == 2 {
            proxy.set_mode(failing(0.5));
        }
        if runs == 20 {
            proxy.set_mode(FaultMode::Pass);
        }
        let outcome = handle(&event(&records[from..]).expect("event"), &enqueuer).await;
        forwarded += outcome.counts.forwarded;
        match outcome.retry_from() {
            None => from = records.len(),
            Some(seq) => {
                let at = records[from..]
                    .iter()
                    .position(|r| r.sequence_number == seq)
                    .expect("a sequence number of the batch");
                if at > 0 || outcome.counts.forwarded > 0 {
                    partial += 1;
                }
                from += at;
            }
        }
    }
    assert!(
        proxy.stats().failed_entries > 0,
        "{runs} runs, {forwarded} forwarded: {:?}",
        proxy.stats()
    );

    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let reader = Buffer::new(sqs, &url);
    loop {
        let messages = reader
            .receive_with_attributes(10, 0, Some(60), &[])
            .await
            .expect("receive");
        if messages.is_empty() {
            break;
        }
        for m in messages {
            for r in unpack(&m.message.body).expect("a Ferry message") {
                let AttributeValue::S(pk) = &r.key["pk"] else {
                    panic!("string keys");
                };
                assert_eq!(Some(&r.version), versions.get(pk), "{pk}");
                *got.entry(pk.clone()).or_default() += 1;
            }
        }
    }
    let keys: Vec<&String> = got.keys().collect();
    let want: Vec<&String> = versions.keys().collect();
    assert_eq!(keys, want, "every record reached the buffer");
    eprintln!(
        "scenario enqueue send_entries 1.0 then 0.5: {runs} invocations ({partial} partial), {} records, \
         {} copies on the buffer, {} entries failed, lost 0",
        records.len(),
        got.values().sum::<usize>(),
        proxy.stats().failed_entries
    );
}
