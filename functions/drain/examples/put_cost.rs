//! Scratch: CPU per conditional put through ferry-aws, by runtime flavour. (temporary)
use ferry_core::{apply_condition, AttributeValue, ChangeRecord, Config, Item, Version};
use futures::StreamExt;
use std::time::Instant;

fn rusage() -> i64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    us(u.ru_utime) + us(u.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args[1] == "serve" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = ferry_sandbox::DynamoRegion::start("eu-west-1", 0).unwrap();
            let ddb = r.client();
            for t in ["tab1", "tab2", "tab3", "tab4"] {
                ddb.create_table()
                    .table_name(t)
                    .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
                    .attribute_definitions(
                        aws_sdk_dynamodb::types::AttributeDefinition::builder()
                            .attribute_name("pk")
                            .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                            .build()
                            .unwrap(),
                    )
                    .key_schema(
                        aws_sdk_dynamodb::types::KeySchemaElement::builder()
                            .attribute_name("pk")
                            .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                            .build()
                            .unwrap(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            println!("{}", r.endpoint());
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        });
        return;
    }
    let endpoint = args[1].clone();
    let flavour = args[2].clone();
    let n: usize = args[3].parse().unwrap();
    let rt = if flavour == "ct" || flavour == "raw" {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    rt.block_on(async move {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        let mut s = ferry_aws::ClientSettings::new("eu-west-1");
        s.dynamodb_endpoint = Some(endpoint);
        let client = s.dynamodb(&base).await;
        let table = ferry_aws::Table::new(client, args[4].clone());
        let config = Config::new("us-east-1", "pk");
        let records: Vec<ChangeRecord> = (0..n).map(|i| {
            let key: Item = [("pk".to_string(), AttributeValue::S(format!("{flavour}{i}")))].into();
            let v = Version::new(1000, "us-east-1");
            let mut image = key.clone();
            image.insert("payload".into(), AttributeValue::S("x".repeat(900)));
            v.stamp_into(&mut image, &config.names);
            ChangeRecord { key, image, tombstone: false, version: v, source_region: "us-east-1".into(), written_at_ms: 0 }
        }).collect();
        if flavour == "raw" {
            use http_body_util::{BodyExt, Full};
            let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let uri: hyper::Uri = args[1].parse().unwrap();
            let payload = "x".repeat(900);
            let c0 = rusage();
            let t = Instant::now();
            let results: Vec<bool> = futures::stream::iter(0..n).map(|i| {
                let body = format!(r##"{{"TableName":"{}","Item":{{"pk":{{"S":"raw{i}"}},"payload":{{"S":"{payload}"}},"ferry_ts":{{"N":"1000"}},"ferry_origin":{{"S":"us-east-1"}}}},"ConditionExpression":"(attribute_not_exists(#n0)) OR (#n1 < :v0) OR ((#n1 = :v1) AND (#n2 < :v2))","ExpressionAttributeNames":{{"#n0":"pk","#n1":"ferry_ts","#n2":"ferry_origin"}},"ExpressionAttributeValues":{{":v0":{{"N":"1000"}},":v1":{{"N":"1000"}},":v2":{{"S":"us-east-1"}}}},"ReturnValuesOnConditionCheckFailure":"ALL_OLD"}}"##, args[4]);
                let req = hyper::Request::post(uri.clone())
                    .header("content-type", "application/x-amz-json-1.0")
                    .header("x-amz-target", "DynamoDB_20120810.PutItem")
                    .header("authorization", "AWS4-HMAC-SHA256 Credential=test/20261125/eu-west-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00")
                    .header("x-amz-date", "20261125T000000Z")
                    .body(Full::new(bytes::Bytes::from(body))).unwrap();
                let client = &client;
                async move {
                    let r = client.request(req).await.unwrap();
                    let ok = r.status().is_success();
                    let _ = r.into_body().collect().await;
                    ok
                }
            }).buffer_unordered(64).collect().await;
            let ok = results.iter().filter(|r| **r).count();
            let cpu = rusage() - c0;
            println!("raw: {ok}/{n} in {:?}: {:.0}/s, {:.1} µs CPU/put", t.elapsed(), n as f64 / t.elapsed().as_secs_f64(), cpu as f64 / n as f64);
            return;
        }
        let c0 = rusage();
        let t = Instant::now();
        let results: Vec<_> = futures::stream::iter(records.iter()).map(|r| {
            let cond = apply_condition(r, &config);
            let table = &table;
            async move { table.put_if(&r.image, &cond).await }
        }).buffer_unordered(64).collect().await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let cpu = rusage() - c0;
        println!("{flavour}: {ok}/{n} in {:?}: {:.0}/s, {:.1} µs CPU/put", t.elapsed(), n as f64 / t.elapsed().as_secs_f64(), cpu as f64 / n as f64);
    });
}
