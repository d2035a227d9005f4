//! The emulators and the checks of `tests/lambda-invoke-check.sh` (`make lambda-invoke-check`):
//! both Lambda functions run under `cargo lambda watch`, are invoked with `cargo lambda invoke`,
//! and their effects are read back here. Loopback only.
//!
//! - `lambda_stack up DIR` — moto (SQS) and two dynoxide servers (us-east-1, the source; eu-west-1,
//!   the destination), every one on `127.0.0.1:<free port>`; the table `ferry-demo` in both, the
//!   buffer `ferry-local-buffer-eu-west-1` and its DLQ `ferry-local-dlq-eu-west-1` (the
//!   template's names for stack `ferry-local`). Writes `DIR/enqueue.env` and
//!   `DIR/drain.env` (for `cargo lambda watch --env-file`), `DIR/stack.json` (for the checks),
//!   then `DIR/ready`. Runs until SIGTERM/SIGINT or until its parent process is gone; moto dies
//!   with it.
//! - `lambda_stack check-enqueue DIR --response FILE... [--expect PK=FIXTURE]... [--absent PK]...`
//!   — every response (enqueue's answers) is `{"batchItemFailures":[]}`; for every `--expect`, the buffer
//!   holds a record of that key whose version and image are the `NewImage` of the key's record
//!   in FIXTURE; no `--absent` key is on the buffer; the DLQ is empty. Leaves the messages on
//!   the buffer (visibility 0).
//! - `lambda_stack check-drain DIR --response FILE [--expect PK=FIXTURE]... [--absent PK]...` —
//!   the response (the drain's report) says the destination was reachable, nothing went to the DLQ,
//!   no error, every record received was applied or superseded and every message deleted; the
//!   destination table holds the newest `NewImage` of each `--expect` key (DynamoDB equality:
//!   numbers by value, sets in any order), no `--absent` key; the
//!   buffer and the DLQ are empty.

use ferry_aws::values::from_sdk;
use ferry_aws::Buffer;
use ferry_core::buffer::unpack;
use ferry_core::condition::items_equal;
use ferry_core::{AttributeValue, Item, Version};
use ferry_enqueue::{decode_event, Input};
use ferry_sandbox::{DynamoRegion, Moto, TableSpec};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

const SOURCE: &str = "us-east-1";
const DESTINATION: &str = "eu-west-1";
const TABLE: &str = "ferry-demo";
const PK: &str = "pk";
const QUEUE: &str = "ferry-local-buffer-eu-west-1";
const DLQ: &str = "ferry-local-dlq-eu-west-1";

const USAGE: &str = "usage: lambda_stack up DIR
       lambda_stack check-enqueue DIR --response FILE... [--expect PK=FIXTURE]... [--absent PK]...
       lambda_stack check-drain DIR --response FILE [--expect PK=FIXTURE]... [--absent PK]...";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") if args.len() == 2 => up(Path::new(&args[1])).await,
        Some(c @ ("check-enqueue" | "check-drain")) if args.len() >= 2 => {
            match Expectations::parse(&args[2..]) {
                Ok(e) if c == "check-enqueue" => check_enqueue(Path::new(&args[1]), &e).await,
                Ok(e) if e.responses.len() == 1 => check_drain(Path::new(&args[1]), &e).await,
                Ok(_) => Err(format!("check-drain takes one --response\n{USAGE}").into()),
                Err(e) => Err(e),
            }
        }
        _ => Err(USAGE.into()),
    };
    if let Err(e) = result {
        eprintln!(
            "lambda_stack {}: {e}",
            args.first().map_or("", String::as_str)
        );
        std::process::exit(1);
    }
}

/// What `up` leaves for the checks (`DIR/stack.json`).
struct Stack {
    sqs: String,
    source_dynamodb: String,
    destination_dynamodb: String,
    buffer_url: String,
    dlq_url: String,
}

async fn up(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let parent = std::os::unix::process::parent_id();
    let moto = Moto::start().await?;
    let source = DynamoRegion::start(SOURCE, 0)?;
    let destination = DynamoRegion::start(DESTINATION, 0)?;
    let spec = TableSpec::new(TABLE, PK).with_ttl_attribute("ttl");
    source.create_table(&spec).await?;
    destination.create_table(&spec).await?;
    // The buffer and its DLQ live in the source region (as in template.yaml).
    let sqs = moto.sqs_client(SOURCE);
    let queues = Buffer::create_named_pair(sqs, QUEUE, DLQ, &[], None).await?;
    let urls = [queues.buffer.queue_url, queues.dlq.queue_url];
    let stack = Stack {
        sqs: moto.endpoint(),
        source_dynamodb: source.endpoint(),
        destination_dynamodb: destination.endpoint(),
        buffer_url: urls[0].clone(),
        dlq_url: urls[1].clone(),
    };
    // Only what depends on the ports: the functions' other local settings (regions, table, key,
    // test credentials) come from `[package.metadata.lambda.env]` in their Cargo.toml, which
    // cargo-lambda applies last; SOURCE, DESTINATION, TABLE and PK above must match them.
    let enqueue = [
        (
            "FERRY_BUFFERS",
            format!("{DESTINATION}={}", stack.buffer_url),
        ),
        ("FERRY_DYNAMODB_ENDPOINT", stack.source_dynamodb.clone()),
        ("FERRY_SQS_ENDPOINT", stack.sqs.clone()),
    ];
    let drain = [
        ("FERRY_BUFFER_URL", stack.buffer_url.clone()),
        ("FERRY_DLQ_URL", stack.dlq_url.clone()),
        (
            "FERRY_DYNAMODB_ENDPOINT",
            stack.destination_dynamodb.clone(),
        ),
        ("FERRY_SQS_ENDPOINT", stack.sqs.clone()),
        // One short invocation: a 1 s long poll, then the budget runs out.
        ("FERRY_DRAIN_BUDGET_S", "3".to_string()),
        ("FERRY_RECEIVE_WAIT_S", "1".to_string()),
    ];
    write_env(&dir.join("enqueue.env"), &enqueue)?;
    write_env(&dir.join("drain.env"), &drain)?;
    std::fs::write(dir.join("stack.json"), stack.to_json().to_string())?;
    std::fs::write(dir.join("ready"), "")?;
    println!(
        "{SOURCE} dynamodb={} sqs={} table={TABLE}",
        stack.source_dynamodb, stack.sqs
    );
    println!(
        "{DESTINATION} dynamodb={} sqs={} table={TABLE}",
        stack.destination_dynamodb, stack.sqs
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let orphaned = async {
        while std::os::unix::process::parent_id() == parent {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = orphaned => eprintln!("lambda_stack: parent process gone, stopping"),
    }
    // Dropping them stops the servers and kills moto's process group.
    drop((moto, source, destination));
    Ok(())
}

impl Stack {
    fn to_json(&self) -> Value {
        json!({
            "sqs": self.sqs,
            "source_dynamodb": self.source_dynamodb,
            "destination_dynamodb": self.destination_dynamodb,
            "buffer_url": self.buffer_url,
            "dlq_url": self.dlq_url,
        })
    }

    fn from_json(v: &Value) -> Result<Self, Error> {
        let field = |name: &str| {
            v.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("stack.json has no {name}"))
        };
        Ok(Stack {
            sqs: field("sqs")?,
            source_dynamodb: field("source_dynamodb")?,
            destination_dynamodb: field("destination_dynamodb")?,
            buffer_url: field("buffer_url")?,
            dlq_url: field("dlq_url")?,
        })
    }
}

fn write_env(path: &Path, vars: &[(&str, String)]) -> Result<(), Error> {
    // Quoted: cargo-lambda's env-file parser refuses an unquoted `=` inside a value
    // (FERRY_BUFFERS is `region=url`).
    let text: String = vars.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
    std::fs::write(path, text)?;
    Ok(())
}

/// `--response FILE`, `--expect PK=FIXTURE` and `--absent PK` arguments.
struct Expectations {
    /// The functions' answers, as `cargo lambda invoke` printed them.
    responses: Vec<std::path::PathBuf>,
    /// Key → the images expected for it (one per `--expect`, in order; the last is the newest).
    expected: BTreeMap<String, Vec<Item>>,
    absent: BTreeSet<String>,
}

impl Expectations {
    fn parse(args: &[String]) -> Result<Self, Error> {
        let mut e = Expectations {
            responses: Vec::new(),
            expected: BTreeMap::new(),
            absent: BTreeSet::new(),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--expect" => {
                    let (pk, fixture) = value
                        .split_once('=')
                        .ok_or_else(|| format!("--expect {value}: not PK=FIXTURE"))?;
                    let image = new_image_of(Path::new(fixture), pk)?;
                    e.expected.entry(pk.to_string()).or_default().push(image);
                }
                "--response" => e.responses.push(value.into()),
                "--absent" => {
                    e.absent.insert(value.clone());
                }
                other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
            }
        }
        if e.expected.is_empty() || e.responses.is_empty() {
            return Err(format!("nothing to check\n{USAGE}").into());
        }
        Ok(e)
    }
}

/// The `NewImage` of the (last) record of key `pk` in a stream-event fixture.
fn new_image_of(fixture: &Path, pk: &str) -> Result<Item, Error> {
    let text = std::fs::read_to_string(fixture)
        .map_err(|e| format!("reading {}: {e}", fixture.display()))?;
    let inputs = decode_event(&text)?;
    inputs
        .iter()
        .rev()
        .find_map(|input| match input {
            Input::Record(r) => {
                let image: Item = r.change.new_image.inner().clone();
                (pk_of(&image) == Some(pk)).then_some(image)
            }
            Input::Undecodable(_) => None,
        })
        .ok_or_else(|| {
            format!(
                "{} has no record with a NewImage of {pk}",
                fixture.display()
            )
            .into()
        })
}

fn pk_of(item: &Item) -> Option<&str> {
    match item.get(PK) {
        Some(AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn load(dir: &Path) -> Result<(Stack, aws_sdk_sqs::Client), Error> {
    let text = std::fs::read_to_string(dir.join("stack.json"))?;
    let stack = Stack::from_json(&serde_json::from_str(&text)?)?;
    let sqs =
        ferry_sandbox::sqs_client_with(&stack.sqs, SOURCE, &ferry_sandbox::ClientOptions::short());
    Ok((stack, sqs))
}

fn read_response(path: &Path) -> Result<Value, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(text.trim())
        .map_err(|e| format!("{} is not JSON ({e}): {text}", path.display()).into())
}

/// Every record on the queue (visibility 0: the messages stay for the next reader).
async fn peek(buffer: &Buffer) -> Result<Vec<ferry_core::ChangeRecord>, Error> {
    let mut seen = std::collections::HashSet::new();
    let mut records = Vec::new();
    let mut quiet_rounds = 0;
    // SQS hands out a sample of the messages per receive: keep asking until a few rounds bring
    // nothing new.
    while quiet_rounds < 3 {
        let messages = buffer.receive_with_attributes(10, 0, Some(0), &[]).await?;
        let mut new = false;
        for m in messages.into_iter().map(|m| m.message) {
            if seen.insert(m.message_id.clone()) {
                new = true;
                records.extend(unpack(&m.body)?);
            }
        }
        quiet_rounds = if new { 0 } else { quiet_rounds + 1 };
    }
    Ok(records)
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64, Error> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await?;
    let attrs = out.attributes.unwrap_or_default();
    Ok(attrs.values().map(|v| v.parse::<u64>().unwrap_or(0)).sum())
}

fn check(failures: &mut Vec<String>, ok: bool, what: impl Into<String>) {
    if !ok {
        failures.push(what.into());
    }
}

fn verdict(what: &str, failures: Vec<String>) -> Result<(), Error> {
    if failures.is_empty() {
        println!("{what}: ok");
        Ok(())
    } else {
        Err(format!("{what}:\n  - {}", failures.join("\n  - ")).into())
    }
}

async fn check_enqueue(dir: &Path, e: &Expectations) -> Result<(), Error> {
    let (stack, sqs) = load(dir)?;
    let mut failures = Vec::new();
    for response in &e.responses {
        let answer = read_response(response)?;
        check(
            &mut failures,
            answer == json!({"batchItemFailures": []}),
            format!(
                "{}: enqueue answered {answer}, expected {{\"batchItemFailures\":[]}}",
                response.display()
            ),
        );
    }
    let records = peek(&Buffer::new(sqs.clone(), &stack.buffer_url)).await?;
    let mut on_buffer: HashMap<String, Vec<&ferry_core::ChangeRecord>> = HashMap::new();
    for r in &records {
        let pk = pk_of(&r.key).unwrap_or("?").to_string();
        on_buffer.entry(pk).or_default().push(r);
    }
    for (pk, images) in &e.expected {
        let found = on_buffer.get(pk).map(Vec::as_slice).unwrap_or(&[]);
        for image in images {
            let version = Version::of(image, &Default::default())?;
            let hit = found.iter().any(|r| {
                Some(&r.version) == version.as_ref()
                    && !r.tombstone
                    && r.source_region == SOURCE
                    && &r.image == image
            });
            check(
                &mut failures,
                hit,
                format!(
                    "no record of {pk} with version {} and the fixture's image on the buffer (found versions {:?})",
                    version.map(|v| v.to_string()).unwrap_or_default(),
                    found.iter().map(|r| r.version.to_string()).collect::<Vec<_>>()
                ),
            );
        }
    }
    for pk in &e.absent {
        check(
            &mut failures,
            !on_buffer.contains_key(pk),
            format!("{pk} is on the buffer but must not be forwarded"),
        );
    }
    let unexpected: Vec<&String> = on_buffer
        .keys()
        .filter(|k| !e.expected.contains_key(*k))
        .collect();
    check(
        &mut failures,
        unexpected.is_empty(),
        format!("unexpected keys on the buffer: {unexpected:?}"),
    );
    let dlq = depth(&sqs, &stack.dlq_url).await?;
    check(
        &mut failures,
        dlq == 0,
        format!("{dlq} messages on the DLQ"),
    );
    verdict(
        &format!(
            "enqueue: {} answers, {} records of {} keys on the buffer",
            e.responses.len(),
            records.len(),
            on_buffer.len()
        ),
        failures,
    )
}

async fn check_drain(dir: &Path, e: &Expectations) -> Result<(), Error> {
    let (stack, sqs) = load(dir)?;
    let mut failures = Vec::new();
    let report = read_response(&e.responses[0])?;
    let n = |field: &str| report.get(field).and_then(Value::as_u64);
    check(
        &mut failures,
        report.get("destination_reachable") == Some(&Value::Bool(true)),
        format!("destination_reachable is not true in {report}"),
    );
    for field in [
        "dlq_messages",
        "dlq_records",
        "other_errors",
        "transport_failures",
        "requeued",
        "left",
        "conflicts",
        "pending",
    ] {
        check(
            &mut failures,
            n(field) == Some(0),
            format!("{field} = {:?}, expected 0", report.get(field)),
        );
    }
    let (received, deleted) = (n("received"), n("deleted"));
    check(
        &mut failures,
        received.is_some_and(|r| r > 0) && received == deleted,
        format!("received {received:?} messages but deleted {deleted:?}"),
    );
    let records = n("records").unwrap_or(0);
    let settled = n("applied").unwrap_or(0) + n("coalesced").unwrap_or(0) + n("stale").unwrap_or(0);
    check(
        &mut failures,
        records > 0 && settled == records,
        format!("{records} records received, but applied + coalesced + stale = {settled}"),
    );
    check(
        &mut failures,
        n("applied").unwrap_or(0) >= e.expected.len() as u64,
        format!(
            "applied {:?}, expected at least {} (one per key)",
            n("applied"),
            e.expected.len()
        ),
    );

    let ddb = ferry_sandbox::dynamodb_client(&stack.destination_dynamodb, DESTINATION);
    let get = |pk: &str| {
        ddb.get_item()
            .table_name(TABLE)
            .key(
                PK,
                aws_sdk_dynamodb::types::AttributeValue::S(pk.to_string()),
            )
            .consistent_read(true)
            .send()
    };
    for (pk, images) in &e.expected {
        let newest = images
            .last()
            .expect("parse keeps at least one image per key");
        match get(pk).await?.item {
            Some(item) => {
                let item = from_sdk(item);
                // DynamoDB equality: the emulator, like DynamoDB, keeps numbers in its own
                // canonical form (`1E+100` comes back as digits) and sets in its own order.
                check(
                    &mut failures,
                    items_equal(&item, newest),
                    format!("{pk} in the destination table differs from the fixture's NewImage:\n      table   {item:?}\n      fixture {newest:?}"),
                );
            }
            None => failures.push(format!("{pk} is not in the destination table")),
        }
    }
    for pk in &e.absent {
        check(
            &mut failures,
            get(pk).await?.item.is_none(),
            format!("{pk} is in the destination table but was never forwarded"),
        );
    }
    let buffer = depth(&sqs, &stack.buffer_url).await?;
    let dlq = depth(&sqs, &stack.dlq_url).await?;
    check(
        &mut failures,
        buffer == 0,
        format!("{buffer} messages left on the buffer"),
    );
    check(
        &mut failures,
        dlq == 0,
        format!("{dlq} messages on the DLQ"),
    );
    verdict(
        &format!(
            "drain: {records} records applied to {} keys of the destination table",
            e.expected.len()
        ),
        failures,
    )
}
