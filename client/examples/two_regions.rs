//! Writes through the Ferry helper in one region and watches the write arrive in another.
//!
//! Start the local sandbox in another terminal, then run this:
//!
//! ```text
//! ferry local up                      # prints `<region> dynamodb=http://127.0.0.1:<port> ...`
//! cargo run -p ferry-client --example two_regions
//! ```
//!
//! The endpoints come from the sandbox's state file (`$FERRY_STATE_DIR/state.json`, by default
//! `$TMPDIR/ferry-local/state.json`), or from flags:
//!
//! ```text
//! cargo run -p ferry-client --example two_regions -- \
//!     --endpoint us-east-1=http://127.0.0.1:8000 --endpoint eu-west-1=http://127.0.0.1:8001 \
//!     [--table ferry-demo] [--timeout 30]
//! ```
//!
//! What it does: a stamped put in the first region, polled for in the second; a stamped update
//! in the second region, polled for in the first; a tombstone delete in the first region, polled
//! until the second reads the key as absent (and shows the tombstone it holds). Ferry's
//! attribute names and key come from the same environment variables the functions read
//! (`FERRY_PARTITION_KEY` defaults to `pk` here, as in `ferry local up`).

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use ferry_client::{Config, Ferry, SdkItem};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One region of a running `ferry local up` (the fields of its state file this needs).
#[derive(Clone, Debug, Deserialize)]
struct RegionEndpoint {
    region: String,
    dynamodb: String,
    table: String,
}

#[derive(Debug, Deserialize)]
struct State {
    pid: u32,
    regions: Vec<RegionEndpoint>,
}

struct Args {
    endpoints: Vec<(String, String)>,
    table: String,
    timeout: Duration,
}

const USAGE: &str =
    "usage: two_regions [--endpoint REGION=URL]... [--table NAME] [--timeout SECONDS]
Without --endpoint, reads the endpoints of a running `ferry local up` from its state file.";

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        endpoints: Vec::new(),
        table: "ferry-demo".to_string(),
        timeout: Duration::from_secs(30),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--endpoint" => {
                let v = value()?;
                let (region, url) = v
                    .split_once('=')
                    .filter(|(r, u)| !r.is_empty() && !u.is_empty())
                    .ok_or_else(|| format!("--endpoint takes REGION=URL, not `{v}`"))?;
                args.endpoints.push((region.to_string(), url.to_string()));
            }
            "--table" => args.table = value()?,
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout takes seconds, not `{v}`"))?;
                args.timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    Ok(args)
}

/// Where `ferry local up` writes its state (the same rule as the CLI).
fn state_path() -> PathBuf {
    std::env::var_os("FERRY_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ferry-local"))
        .join("state.json")
}

fn endpoints(args: &Args) -> Result<Vec<RegionEndpoint>, BoxError> {
    if !args.endpoints.is_empty() {
        return Ok(args
            .endpoints
            .iter()
            .map(|(region, url)| RegionEndpoint {
                region: region.clone(),
                dynamodb: url.clone(),
                table: args.table.clone(),
            })
            .collect());
    }
    let path = state_path();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no running sandbox found ({}: {e}); start one with `ferry local up`, or pass --endpoint REGION=URL twice",
            path.display()
        )
    })?;
    let state: State =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("sandbox (pid {}) from {}", state.pid, path.display());
    Ok(state.regions)
}

/// A plain SDK client, as an application builds it; the sandbox takes any credentials.
async fn client(endpoint: &RegionEndpoint) -> Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(endpoint.region.clone()))
        .endpoint_url(&endpoint.dynamodb)
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "ferry-example",
        ))
        .load()
        .await;
    Client::new(&config)
}

/// Ferry's configuration for one region: the environment, as the functions read it, with the
/// region set and the sandbox's partition key as the default.
fn ferry_for(region: &str) -> Result<Ferry, BoxError> {
    let config = Config::from_lookup(|name| match name {
        "FERRY_LOCAL_REGION" => Some(region.to_string()),
        "FERRY_PARTITION_KEY" => std::env::var(name).ok().or_else(|| Some("pk".into())),
        other => std::env::var(other).ok(),
    })?;
    Ok(Ferry::new(config)?)
}

/// `{message: "hello", pk: "example#1", ...}`, attributes sorted.
fn show(item: &SdkItem) -> String {
    let mut names: Vec<&String> = item.keys().collect();
    names.sort();
    let fields: Vec<String> = names
        .into_iter()
        .map(|n| {
            let v = match &item[n] {
                AttributeValue::S(s) => format!("{s:?}"),
                AttributeValue::N(x) => x.clone(),
                AttributeValue::Bool(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            format!("{n}: {v}")
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// A region as the example uses it: its client, table and helper.
struct Side {
    name: String,
    client: Client,
    table: String,
    ferry: Ferry,
}

impl Side {
    async fn get(&self, key: &SdkItem) -> Result<Option<SdkItem>, BoxError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .consistent_read(true);
        Ok(self.ferry.get(get).await?)
    }

    /// Polls until `done` holds for what the helper reads, or the timeout passes.
    async fn wait_for(
        &self,
        key: &SdkItem,
        timeout: Duration,
        what: &str,
        done: impl Fn(Option<&SdkItem>) -> bool,
    ) -> Result<Option<SdkItem>, BoxError> {
        let started = Instant::now();
        loop {
            let read = self.get(key).await?;
            if done(read.as_ref()) {
                println!(
                    "  {}: {what} after {} ms",
                    self.name,
                    started.elapsed().as_millis()
                );
                return Ok(read);
            }
            if started.elapsed() >= timeout {
                return Err(format!(
                    "{}: {what} did not happen within {} s (is the sandbox's replication running?)",
                    self.name,
                    timeout.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let args = parse_args()?;
    let regions = endpoints(&args)?;
    let [first, second] = match regions.as_slice() {
        [a, b, ..] => [a.clone(), b.clone()],
        _ => return Err("two regions are needed".into()),
    };
    let mut sides = Vec::new();
    for r in [&first, &second] {
        let side = Side {
            name: r.region.clone(),
            client: client(r).await,
            table: r.table.clone(),
            ferry: ferry_for(&r.region)?,
        };
        println!("{} dynamodb={} table={}", side.name, r.dynamodb, side.table);
        sides.push(side);
    }
    let (a, b) = (&sides[0], &sides[1]);
    let pk = &a.ferry.config().key.partition;
    let key: SdkItem = [(
        pk.clone(),
        AttributeValue::S(format!("example#{}", a.ferry.now_ms())),
    )]
    .into();

    // 1. A stamped put in the first region.
    let mut item = key.clone();
    item.insert(
        "message".into(),
        AttributeValue::S(format!("hello from {}", a.name)),
    );
    let put = a
        .client
        .put_item()
        .table_name(&a.table)
        .set_item(Some(item));
    let written = a.ferry.put(put).send().await?;
    println!("\nput in {} at version {}", a.name, written.version);
    let here = a
        .get(&key)
        .await?
        .ok_or("the item just written is not there")?;
    println!("  {}: {}", a.name, show(&here));
    let there = b
        .wait_for(&key, args.timeout, "the item arrived", |i| i.is_some())
        .await?
        .ok_or("no item")?;
    println!("  {}: {}", b.name, show(&there));

    // 2. A stamped update in the second region, above the version it read.
    let update = b
        .client
        .update_item()
        .table_name(&b.table)
        .set_key(Some(key.clone()))
        .update_expression("SET #m = :m")
        .expression_attribute_names("#m", "message")
        .expression_attribute_values(
            ":m",
            AttributeValue::S(format!("hello back from {}", b.name)),
        );
    let previous = b.ferry.previous_of(Some(&there))?;
    let updated = b.ferry.update(update).previous(previous).send().await?;
    println!("\nupdate in {} at version {}", b.name, updated.version);
    let version = updated.version.clone();
    let back = a
        .wait_for(&key, args.timeout, "the update arrived", |i| {
            i.is_some_and(|i| a.ferry.version_of(i).ok().flatten().as_ref() == Some(&version))
        })
        .await?
        .ok_or("no item")?;
    println!("  {}: {}", a.name, show(&back));

    // 3. A delete in the first region: a tombstone, which readers treat as absent.
    let deleted = a
        .ferry
        .delete(a.client.put_item().table_name(&a.table), key.clone())
        .previous(updated.version)
        .send()
        .await?;
    println!(
        "\ndelete in {} at version {} (a tombstone)",
        a.name, deleted.version
    );
    b.wait_for(&key, args.timeout, "the item is gone", |i| i.is_none())
        .await?;
    let raw = b
        .client
        .get_item()
        .table_name(&b.table)
        .set_key(Some(key.clone()))
        .consistent_read(true)
        .send()
        .await?
        .item;
    match raw {
        Some(stone) => println!("  {} stores the tombstone: {}", b.name, show(&stone)),
        None => println!("  {} stores nothing under the key", b.name),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("two_regions: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
