//! Amazon's DynamoDB Local: the conditional write Ferry's drain relies on, and its stream.

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use ferry_sandbox::{DynamoDbLocal, SandboxError, StreamPoller, TableSpec};

#[tokio::test]
async fn conditional_put_returns_all_old_on_failure() {
    let server = match DynamoDbLocal::start().await {
        Ok(server) => server,
        Err(SandboxError::ToolMissing { tool, detail }) if tool == "java" => {
            println!("SKIPPED: DynamoDB Local needs java: {detail}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(server.endpoint().starts_with("http://127.0.0.1:"));
    assert!(
        server.is_loopback_only(),
        "javac is on this machine: expected loopback binding"
    );
    let client = server.client("eu-west-1");
    let table = ferry_sandbox::create_table(&client, &TableSpec::new("items", "pk"))
        .await
        .unwrap();

    let s = |v: &str| AttributeValue::S(v.to_string());
    client
        .put_item()
        .table_name("items")
        .item("pk", s("k"))
        .item("ts", AttributeValue::N("100".into()))
        .send()
        .await
        .unwrap();
    let err = client
        .put_item()
        .table_name("items")
        .item("pk", s("k"))
        .item("ts", AttributeValue::N("50".into()))
        .condition_expression("attribute_not_exists(pk) OR ts < :ts")
        .expression_attribute_values(":ts", AttributeValue::N("50".into()))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await
        .unwrap_err();
    let service = err.into_service_error();
    assert!(
        service.is_conditional_check_failed_exception(),
        "{service:?}"
    );
    let old = match service {
        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(e) => {
            e.item.expect("ALL_OLD item on the error")
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(old.get("ts"), Some(&AttributeValue::N("100".into())));

    // Its stream, read by the same poller, yields Lambda-shaped records as well (the raw
    // GetRecords call must name the same region: DynamoDB Local keeps a database per region).
    let mut poller = StreamPoller::new(&server.endpoint(), "eu-west-1", &table.stream_arn);
    let records = poller.collect(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(records[0].event_name, "INSERT");
    assert_eq!(
        records[0].event_source_arn.as_deref(),
        Some(table.stream_arn.as_str())
    );
}
