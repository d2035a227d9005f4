//! What one conditional `PutItem` costs the drain's process, to tell the drain's own CPU from
//! its HTTP client's (see `BENCH.md`). Against a dynoxide server it starts itself:
//!
//! ```text
//! cargo build --profile bench -p ferry-drain --example put_cost
//! target/release/examples/put_cost serve &          # prints http://127.0.0.1:PORT
//! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true \
//!   target/release/examples/put_cost http://127.0.0.1:PORT sdk 5000 tab1   # Table::put_if, 1 thread
//! ... sdk-mt 5000 tab2    # the same on a multi-thread runtime
//! ... raw 5000 tab3       # a bare hyper POST of the same JSON (no SDK, no signing): the floor
//! ```
//!
//! Each prints puts/s and CPU µs per put (`getrusage`, whole process, 64 in flight).

use ferry_core::{apply_condition, AttributeValue, ChangeRecord, Config, Item, Version};
use futures::StreamExt;
use std::time::Instant;

const TABLES: [&str; 4] = ["tab1", "tab2", "tab3", "tab4"];
const IN_FLIGHT: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: put_cost serve | put_cost <endpoint> <sdk|sdk-mt|raw> <n> <table>";
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(),
        Some(endpoint) if args.len() == 5 => {
            let n: usize = args[3].parse().expect(usage);
            measure(endpoint, &args[2], n, &args[4]);
        }
        _ => eprintln!("{usage}"),
    }
}

fn serve() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let region = ferry_sandbox::DynamoRegion::start("eu-west-1", 0).expect("dynoxide");
        let ddb = region.client();
        for t in TABLES {
            ferry_sandbox::create_destination_table(&ddb, t, "pk")
                .await
                .expect("table");
        }
        println!("{}", region.endpoint());
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    });
}

fn measure(endpoint: &str, mode: &str, n: usize, table: &str) {
    let rt = if mode == "sdk-mt" {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");
    rt.block_on(async move {
        let payload = "x".repeat(900);
        let t = Instant::now();
        let c0 = process_cpu_us();
        let ok = if mode == "raw" {
            raw(endpoint, n, table, &payload).await
        } else {
            sdk(endpoint, n, table, &payload).await
        };
        let cpu = process_cpu_us() - c0;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{mode}: {ok}/{n} written in {secs:.2} s: {:.0}/s, {:.1} µs CPU/put",
            n as f64 / secs,
            cpu as f64 / n as f64
        );
    });
}

async fn sdk(endpoint: &str, n: usize, table: &str, payload: &str) -> usize {
    let base = ferry_aws::clients::base_config().await;
    let mut settings = ferry_aws::ClientSettings::new("eu-west-1");
    settings.dynamodb_endpoint = Some(endpoint.to_string());
    let table = ferry_aws::Table::new(settings.dynamodb(&base).await, table);
    let config = Config::new("us-east-1", "pk");
    let records: Vec<ChangeRecord> = (0..n)
        .map(|i| {
            let key: Item = [("pk".to_string(), AttributeValue::S(format!("k{i}")))].into();
            let version = Version::new(1000, "us-east-1");
            let mut image = key.clone();
            image.insert("payload".into(), AttributeValue::S(payload.to_string()));
            version.stamp_into(&mut image, &config.names);
            ChangeRecord {
                key,
                image,
                tombstone: false,
                version,
                source_region: "us-east-1".into(),
                written_at_ms: 0,
            }
        })
        .collect();
    futures::stream::iter(records.iter())
        .map(|r| {
            let condition = apply_condition(r, &config);
            let table = &table;
            async move { table.put_if(&r.image, &condition).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|r| futures::future::ready(matches!(r, Ok(ferry_aws::WriteOutcome::Written))))
        .count()
        .await
}

async fn raw(endpoint: &str, n: usize, table: &str, payload: &str) -> usize {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let uri: hyper::Uri = endpoint.parse().expect("endpoint");
    futures::stream::iter(0..n)
        .map(|i| {
            // The body the SDK sends for the drain's put, built by hand.
            let body = format!(
                r##"{{"TableName":"{table}","Item":{{"pk":{{"S":"k{i}"}},"payload":{{"S":"{payload}"}},"ferry_ts":{{"N":"1000"}},"ferry_origin":{{"S":"us-east-1"}}}},"ConditionExpression":"(attribute_not_exists(#n0)) OR (#n1 < :v0) OR ((#n1 = :v1) AND (#n2 < :v2))","ExpressionAttributeNames":{{"#n0":"pk","#n1":"ferry_ts","#n2":"ferry_origin"}},"ExpressionAttributeValues":{{":v0":{{"N":"1000"}},":v1":{{"N":"1000"}},":v2":{{"S":"us-east-1"}}}},"ReturnValuesOnConditionCheckFailure":"ALL_OLD"}}"##
            );
            let request = hyper::Request::post(uri.clone())
                .header("content-type", "application/x-amz-json-1.0")
                .header("x-amz-target", "DynamoDB_20120810.PutItem")
                .header("x-amz-date", "20261125T000000Z")
                .header(
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20261125/eu-west-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00",
                )
                .body(Full::new(bytes::Bytes::from(body)))
                .expect("request");
            let client = &client;
            async move {
                match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        ok
                    }
                    Err(_) => false,
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
}

/// CPU time of this process, all threads, µs.
fn process_cpu_us() -> i64 {
    let (user, system) = ferry_measure::process_cpu();
    (user + system).as_micros() as i64
}
