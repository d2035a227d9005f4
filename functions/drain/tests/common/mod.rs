//! Test bench for the drain: one moto (SQS + STS) shared by the whole test binary, one dynoxide
//! server per destination region and test, queues and tables with unique names, and helpers to
//! fill a buffer and read the destination.
#![allow(dead_code)]

use aws_sdk_dynamodb::types::AttributeValue as SdkValue;
use ferry_aws::{Buffer, Table};
use ferry_core::buffer::pack;
use ferry_core::{AttributeValue, ChangeRecord, Item, Version};
use ferry_drain::{drain, DrainEnv, DrainReport, Drainer};
use ferry_sandbox::{DynamoRegion, Moto, TableSpec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub const SOURCE: &str = "us-east-1";
pub const DESTINATION: &str = "eu-west-1";

/// moto, started once for the binary (tests run in parallel threads, each with its own
/// runtime; moto is a child process, so it does not belong to any of them).
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(Moto::start()).expect("moto starts")
        })
        .join()
        .expect("moto thread")
    })
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// One source → destination pair: a buffer and DLQ on moto, a destination region on dynoxide.
pub struct Pair {
    pub region: DynamoRegion,
    pub table_name: String,
    pub buffer_url: String,
    pub dlq_url: String,
    pub sqs: aws_sdk_sqs::Client,
    pub ddb: aws_sdk_dynamodb::Client,
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The base SDK config the way `main.rs` gets it (`aws_config::defaults`, which brings the
/// time source and sleep the STS provider needs), with the sandbox's static credentials.
pub async fn base_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(SOURCE))
        .credentials_provider(ferry_sandbox::test_credentials())
        .load()
        .await
}

impl Pair {
    pub async fn new() -> Pair {
        init_logs();
        let moto = moto();
        let region = DynamoRegion::start(DESTINATION, 0).expect("dynoxide");
        let table_name = unique("dest");
        region
            .create_table(&TableSpec::new(&table_name, "pk").with_ttl_attribute("ttl"))
            .await
            .expect("table");
        let sqs = moto.sqs_client(SOURCE);
        let queues = Buffer::create_pair(sqs.clone(), &unique("buffer"), &[], None)
            .await
            .expect("queue");
        let (buffer_url, dlq_url) = (queues.buffer.queue_url, queues.dlq.queue_url);
        let ddb = region.client();
        Pair {
            region,
            table_name,
            buffer_url,
            dlq_url,
            sqs,
            ddb,
        }
    }

    /// The environment `main.rs` would see for this pair, with short timeouts; `dynamodb`
    /// is the endpoint the drain writes to (the region itself or a proxy in front of it).
    pub fn env(&self, dynamodb: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let moto = moto().endpoint();
        let mut map: HashMap<String, String> = [
            ("AWS_REGION", SOURCE),
            ("FERRY_PARTITION_KEY", "pk"),
            ("FERRY_DESTINATIONS", DESTINATION),
            ("FERRY_DESTINATION_REGION", DESTINATION),
            ("FERRY_DESTINATION_TABLE", self.table_name.as_str()),
            ("FERRY_BUFFER_URL", self.buffer_url.as_str()),
            ("FERRY_DLQ_URL", self.dlq_url.as_str()),
            ("FERRY_SQS_ENDPOINT", moto.as_str()),
            ("FERRY_DYNAMODB_ENDPOINT", dynamodb),
            ("FERRY_DRAIN_BUDGET_S", "8"),
            ("FERRY_RECEIVE_WAIT_S", "1"),
            ("FERRY_MAX_IN_FLIGHT", "16"),
            ("FERRY_DESTINATION_CONNECT_TIMEOUT_MS", "250"),
            ("FERRY_DESTINATION_ATTEMPT_TIMEOUT_MS", "500"),
            ("FERRY_DESTINATION_OPERATION_TIMEOUT_MS", "1000"),
            ("FERRY_DESTINATION_MAX_ATTEMPTS", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            map.insert(k.to_string(), v.to_string());
        }
        map
    }

    /// A drainer built the way `main.rs` builds it, writing through `dynamodb`.
    pub async fn drainer_via(&self, dynamodb: &str, extra: &[(&str, &str)]) -> Drainer {
        let map = self.env(dynamodb, extra);
        let env = DrainEnv::from_lookup(move |k| map.get(k).cloned()).expect("env");
        let base = base_config().await;
        let mut drainer = env.connect(&base, ferry_core::clock::system()).await;
        drainer.settings.ping_timeout = Duration::from_millis(500);
        // Tests drain a backlog and look at the result: no need to poll an empty queue.
        drainer.settings.return_when_idle = true;
        drainer
    }

    pub async fn drainer(&self) -> Drainer {
        self.drainer_via(&self.region.endpoint(), &[]).await
    }

    pub fn buffer(&self) -> Buffer {
        Buffer::new(self.sqs.clone(), self.buffer_url.clone())
    }

    pub fn dlq_buffer(&self) -> Buffer {
        Buffer::new(self.sqs.clone(), self.dlq_url.clone())
    }

    pub fn table(&self) -> Table {
        Table::new(self.ddb.clone(), self.table_name.clone())
    }

    /// Packs `records` into as few messages as fit and sends them.
    pub async fn send(&self, records: &[ChangeRecord]) {
        for batch in pack(records).expect("pack") {
            let failed = self.buffer().send_batch(&batch).await.expect("send");
            assert!(failed.is_empty());
        }
    }

    /// Sends each chunk of `per_message` records as its own message.
    pub async fn send_chunked(&self, records: &[ChangeRecord], per_message: usize) {
        for chunk in records.chunks(per_message) {
            self.send(chunk).await;
        }
    }

    pub async fn send_raw(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.buffer_url)
            .message_body(body)
            .send()
            .await
            .expect("send raw");
    }

    /// (visible, in flight, delayed) message counts of a queue.
    pub async fn depth(&self, url: &str) -> (u64, u64, u64) {
        let d = Buffer::new(self.sqs.clone(), url)
            .depth()
            .await
            .expect("attributes");
        (d.visible, d.in_flight, d.delayed)
    }

    /// Every DLQ message: (body, its `ferry-reason`).
    pub async fn dlq_messages(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        loop {
            let r = self
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .visibility_timeout(60)
                .send()
                .await
                .expect("receive dlq");
            let messages = r.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                let reason = m
                    .message_attributes
                    .as_ref()
                    .and_then(|a| a.get(ferry_aws::buffer::REASON_ATTRIBUTE))
                    .and_then(|v| v.string_value.clone())
                    .unwrap_or_default();
                out.push((m.body.unwrap_or_default(), reason));
            }
        }
    }

    /// Writes an item straight into the destination (a local write there).
    pub async fn put_local(&self, item: &Item) {
        self.ddb
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(ferry_aws::values::to_sdk(item)))
            .send()
            .await
            .expect("put");
    }

    pub async fn get(&self, pk: &str) -> Option<Item> {
        self.table().get(&key(pk)).await.expect("get")
    }

    pub async fn version_of(&self, pk: &str) -> Option<Version> {
        let item = self.get(pk).await?;
        Version::of(&item, &Default::default()).expect("readable version")
    }

    /// Stamps an item with a version (as the destination's enqueue would), keeping its values.
    pub async fn stamp(&self, pk: &str, version: &Version) {
        self.ddb
            .update_item()
            .table_name(&self.table_name)
            .key("pk", SdkValue::S(pk.into()))
            .update_expression("SET ferry_ts = :t, ferry_origin = :o")
            .expression_attribute_values(":t", SdkValue::N(version.ts_ms.to_string()))
            .expression_attribute_values(":o", SdkValue::S(version.origin.clone()))
            .send()
            .await
            .expect("stamp");
    }
}

/// Drains until the buffer is empty (nothing visible, in flight or delayed), at most `runs`
/// times; returns the sum of the reports.
pub async fn drain_until_empty(pair: &Pair, drainer: &Drainer, runs: usize) -> DrainReport {
    let mut total = DrainReport::default();
    for _ in 0..runs {
        total.absorb(&drain(drainer).await);
        if pair.depth(&pair.buffer_url).await == (0, 0, 0) {
            return total;
        }
    }
    panic!("the buffer is not empty after {runs} drains: {total:?}");
}

pub fn key(pk: &str) -> Item {
    [("pk".to_string(), AttributeValue::S(pk.into()))].into()
}

/// An item at a version, with a `data` attribute.
pub fn item(pk: &str, version: Option<&Version>, data: &str) -> Item {
    let mut item = key(pk);
    item.insert("data".into(), AttributeValue::S(data.into()));
    if let Some(v) = version {
        v.stamp_into(&mut item, &Default::default());
    }
    item
}

/// A change record for `pk` at `(ts, origin)` carrying `data`.
pub fn record(pk: &str, ts: u64, origin: &str, data: &str) -> ChangeRecord {
    let version = Version::new(ts, origin);
    ChangeRecord {
        key: key(pk),
        image: item(pk, Some(&version), data),
        tombstone: false,
        version,
        source_region: origin.into(),
        written_at_ms: ferry_core::clock::system_now_ms(),
    }
}

pub fn data_of(item: &Item) -> Option<&str> {
    match item.get("data") {
        Some(AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// A `tracing` writer into memory, to assert on log lines.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
