//! The emulators a local `cargo lambda watch` of enqueue talks to (the defaults in
//! `[package.metadata.lambda.env]`), on loopback only:
//!
//! - `cargo run -p ferry-enqueue --example local_stack` — dynoxide as us-east-1's DynamoDB on
//!   127.0.0.1:8000 with the table `ferry-demo` (stream, TTL on `ttl`), moto's SQS on
//!   127.0.0.1:5000 (from `<repo>/.venv`, reused if one already answers there) with the buffer
//!   `ferry-local-buffer-eu-west-1` and its DLQ `ferry-local-dlq-eu-west-1`; the table is seeded with the current items the
//!   case-4 fixtures expect. Runs until Ctrl-C.
//! - `... --example local_stack -- peek` — what the buffer holds (keys, versions, attribute
//!   names; messages stay on the queue) and the versions in the table.
//! - `... --example local_stack -- large-fixture PATH` — writes a stream event with a ~390 KB
//!   item to PATH, for `cargo lambda invoke enqueue --data-file PATH`.

use ferry_aws::values::{from_sdk, to_sdk};
use ferry_aws::Buffer;
use ferry_core::buffer::unpack;
use ferry_core::item::describe_key;
use ferry_core::{AttributeValue, Config, Item, Version};
use ferry_enqueue::synthetic::{event_json, StreamRecord};
use ferry_enqueue::{decode_event, Input, Plan};
use ferry_sandbox::{
    dynamodb_client, sqs_client_with, ClientOptions, DynamoRegion, Moto, TableSpec,
};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

const REGION: &str = "us-east-1";
const DDB_PORT: u16 = 8000;
const SQS_PORT: u16 = 5000;
const TABLE: &str = "ferry-demo";
const QUEUE: &str = "ferry-local-buffer-eu-west-1";
const DLQ: &str = "ferry-local-dlq-eu-west-1";

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("up") => up().await,
        Some("peek") => peek().await,
        Some("large-fixture") => {
            let path = args.get(1).ok_or("usage: large-fixture PATH")?;
            large_fixture(path)
        }
        Some(other) => {
            Err(format!("unknown command `{other}` (up, peek, large-fixture PATH)").into())
        }
    }
}

fn ddb_endpoint() -> String {
    format!("http://127.0.0.1:{DDB_PORT}")
}

fn sqs_endpoint() -> String {
    format!("http://127.0.0.1:{SQS_PORT}")
}

fn sqs() -> aws_sdk_sqs::Client {
    sqs_client_with(&sqs_endpoint(), REGION, &ClientOptions::short())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn up() -> Result<(), Error> {
    // DynamoDB: dynoxide in this process (the sandbox's), unless something already serves the
    // port.
    let _dynamo = match DynamoRegion::start_on(REGION, 0, DDB_PORT) {
        Ok(region) => {
            println!("dynoxide (us-east-1) on {}", ddb_endpoint());
            Some(region)
        }
        Err(e) => {
            println!("127.0.0.1:{DDB_PORT} is taken ({e}); using whatever DynamoDB answers there");
            None
        }
    };
    let ddb = dynamodb_client(&ddb_endpoint(), REGION);
    match ferry_sandbox::create_table(&ddb, &TableSpec::new(TABLE, "pk").with_ttl_attribute("ttl"))
        .await
    {
        Ok(_) => println!("table {TABLE} created (stream NEW_AND_OLD_IMAGES, TTL on `ttl`)"),
        Err(e) if e.to_string().contains("ResourceInUse") => println!("table {TABLE} exists"),
        Err(e) => return Err(e.into()),
    }

    // SQS: moto from the venv, unless one already answers on the port.
    let _moto = if sqs().list_queues().send().await.is_ok() {
        println!("reusing the SQS endpoint on {}", sqs_endpoint());
        None
    } else {
        let moto = Moto::start_on_port(SQS_PORT).await?;
        println!("moto (SQS) on {}", sqs_endpoint());
        Some(moto)
    };
    let queues = Buffer::create_named_pair(sqs(), QUEUE, DLQ, &[], None).await?;
    for queue in [queues.buffer, queues.dlq] {
        println!("queue {}", queue.queue_url);
    }

    // The current items the case-4 fixtures were written against (their new images).
    let mut config = Config::new(REGION, "pk");
    config.destinations = vec!["eu-west-1".into()];
    let mut seeded = Vec::new();
    for file in [
        "unstamped-write.json",
        "kept-version.json",
        "mixed-batch.json",
    ] {
        let text = std::fs::read_to_string(repo().join("tests/fixtures").join(file))?;
        let inputs = decode_event(&text)?;
        let plan = Plan::new(inputs.iter().map(Input::as_ref), &config);
        for (index, hint) in &plan.hints {
            if let Some(Input::Record(r)) = inputs.get(*index) {
                let image: Item = r.change.new_image.inner().clone();
                if !image.is_empty() {
                    ddb.put_item()
                        .table_name(TABLE)
                        .set_item(Some(to_sdk(&image)))
                        .send()
                        .await?;
                    seeded.push(describe_key(&hint.key));
                }
            }
        }
    }
    println!("seeded: {}", seeded.join("; "));
    println!("\nready. In another shell (with `source .venv/bin/activate`):");
    println!("  cargo lambda watch -p ferry-enqueue");
    println!("  cargo lambda invoke enqueue --data-file tests/fixtures/mixed-batch.json");
    println!("  cargo run -p ferry-enqueue --example local_stack -- peek");
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn peek() -> Result<(), Error> {
    let url = sqs()
        .get_queue_url()
        .queue_name(QUEUE)
        .send()
        .await?
        .queue_url
        .ok_or("no queue URL")?;
    let buffer = Buffer::new(sqs(), url);
    println!("buffer {QUEUE}:");
    let mut seen = std::collections::HashSet::new();
    // Visibility 0 leaves every message on the queue for the next peek (or a drain).
    for _ in 0..20 {
        let messages = buffer.receive_with_attributes(10, 0, Some(0), &[]).await?;
        if messages.is_empty() {
            break;
        }
        let mut new = false;
        for m in messages.into_iter().map(|m| m.message) {
            if !seen.insert(m.message_id.clone()) {
                continue;
            }
            new = true;
            for r in unpack(&m.body)? {
                let mut names: Vec<&String> = r.image.keys().collect();
                names.sort();
                println!(
                    "  {}  version {}{}  attributes {:?}",
                    describe_key(&r.key),
                    r.version,
                    if r.tombstone { "  TOMBSTONE" } else { "" },
                    names
                );
            }
        }
        if !new {
            break;
        }
    }
    println!("table {TABLE}:");
    let ddb = dynamodb_client(&ddb_endpoint(), REGION);
    let items = ddb
        .scan()
        .table_name(TABLE)
        .send()
        .await?
        .items
        .unwrap_or_default();
    for item in items.into_iter().map(from_sdk) {
        let key: Item = item
            .iter()
            .filter(|(k, _)| k.as_str() == "pk")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let version = match Version::of(&item, &Default::default()) {
            Ok(Some(v)) => v.to_string(),
            Ok(None) => "unversioned".into(),
            Err(e) => e.to_string(),
        };
        let tomb = matches!(item.get("ferry_deleted"), Some(AttributeValue::Bool(true)));
        println!(
            "  {}  {version}{}",
            describe_key(&key),
            if tomb { "  TOMBSTONE" } else { "" }
        );
    }
    Ok(())
}

/// A stream event with one ~390 KB helper-stamped item (random, so it barely compresses).
fn large_fixture(path: &str) -> Result<(), Error> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(390);
    let mut item: Item = [("pk".to_string(), AttributeValue::S("large#1".into()))].into();
    item.insert(
        "blob".into(),
        AttributeValue::B((0..200_000).map(|_| rng.gen()).collect()),
    );
    item.insert(
        "text".into(),
        AttributeValue::S(
            (0..190_000)
                .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
                .collect(),
        ),
    );
    Version::new(ferry_core::clock::system_now_ms(), REGION)
        .stamp_into(&mut item, &Default::default());
    let key: Item = [("pk".to_string(), AttributeValue::S("large#1".into()))].into();
    let event = event_json(&[StreamRecord::insert(
        "4421589900000000017450449999",
        &key,
        &item,
    )]);
    std::fs::write(path, event.to_string())?;
    println!(
        "wrote {path} ({} KB)",
        std::fs::metadata(path)?.len() / 1024
    );
    Ok(())
}
