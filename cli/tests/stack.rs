//! Issue #18's "done when": every operator verb runs against a stack deployed from
//! `template.yaml`, found with `--stack` alone. The sandbox already names its queues as the
//! template names a stack's (`ferry-local-buffer-<dst>`, `ferry-local-dlq-<dst>`); this test
//! reads the template's Outputs and queue names, creates in each region a CloudFormation stack
//! (on moto) whose outputs point at the sandbox's table and queues, and alarms with a topic, then
//! runs status, verify, backfill, dlq list/redrive and doctor through the `ferry` binary.

use ferry_aws::Table;
use ferry_cli::cluster::{Cluster, ClusterOptions};
use ferry_cli::ops::stack;
use ferry_core::{AttributeValue, Condition, Item};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const TABLE: &str = "ferry-stack";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ferry-local-alarms";

/// template.yaml's output keys: stack-wide, and per destination (`Fn::ForEach`, without `&{Region}`).
fn template_outputs(template: &str) -> (Vec<String>, Vec<String>) {
    let block = template
        .split_once("\nOutputs:\n")
        .map(|(_, rest)| rest)
        .expect("template.yaml has Outputs");
    let block = block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .collect::<Vec<_>>();
    let key = |l: &str| {
        l.trim()
            .trim_start_matches("- ")
            .trim_end_matches(':')
            .to_string()
    };
    let top = block
        .iter()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
        .map(|l| key(l))
        .filter(|k| !k.starts_with("Fn::"))
        .collect();
    let per = block
        .iter()
        .filter(|l| l.trim_end().ends_with("&{Region}:"))
        .map(|l| key(l).trim_end_matches("&{Region}").to_string())
        .collect();
    (top, per)
}

/// The names the template gives a stack's queues, for `stack` and `destination`.
fn template_queue_name(template: &str, kind: &str, stack: &str, destination: &str) -> String {
    let pattern = format!("\"${{AWS::StackName}}-{kind}-${{Region}}\"");
    assert!(
        template.contains(&format!("QueueName: !Sub {pattern}")),
        "template.yaml names its {kind} queues {pattern}"
    );
    format!("{stack}-{kind}-{destination}")
}

fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION")
        .env_remove("FERRY_STATE_DIR");
    c
}

async fn run_ferry(mut c: Command) -> (i32, serde_json::Value) {
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("join")
        .expect("running ferry");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "ferry exited {:?}: {}\nstderr: {}",
        out.status.code(),
        stdout.trim(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

/// The stack's outputs in `region`: every key the template has, the ones the tools read
/// pointing at the sandbox's table and queues.
async fn create_stack(cluster: &Cluster, template: &str, region: &str) {
    let (top, per) = template_outputs(template);
    let others: Vec<&str> = [US, EU].into_iter().filter(|r| *r != region).collect();
    let mut outputs = BTreeMap::new();
    for k in &top {
        let v = match k.as_str() {
            stack::TABLE_NAME => TABLE.to_string(),
            stack::REGION => region.to_string(),
            stack::DESTINATION_REGIONS => others.join(","),
            other => format!("{other} of {region}"),
        };
        outputs.insert(k.clone(), v);
    }
    let sqs = cluster.moto.sqs_client(region);
    for d in &others {
        for p in &per {
            let v = match p.as_str() {
                stack::BUFFER_URL | stack::DLQ_URL => {
                    let kind = if p == stack::BUFFER_URL {
                        "buffer"
                    } else {
                        "dlq"
                    };
                    let name = template_queue_name(template, kind, stack::LOCAL_STACK, d);
                    let url = sqs.get_queue_url().queue_name(&name).send().await;
                    let url = url.unwrap_or_else(|e| panic!("{region} queue {name}: {e:?}"));
                    url.queue_url.expect("a queue URL")
                }
                stack::DESTINATION_TABLE => TABLE.to_string(),
                // Only for destinations in other accounts (the template's condition).
                stack::DESTINATION_ROLE_ARN => continue,
                other => format!("arn:aws:iam::123456789012:role/{other}-{region}-{d}"),
            };
            outputs.insert(stack::output_key(p, d), v);
        }
        // The template's queue policy: only the enqueue, drain and operator roles send.
        let drain_role = &outputs[&stack::output_key(stack::DRAIN_ROLE_ARN, d)];
        for kind in ["buffer", "dlq"] {
            let name = template_queue_name(template, kind, stack::LOCAL_STACK, d);
            set_policy(cluster, region, &name, &template_policy(drain_role)).await;
        }
    }
    let body = serde_json::json!({
        "Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": outputs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!({"Value": v})))
            .collect::<serde_json::Map<_, _>>(),
    });
    cfn_client(cluster, region)
        .create_stack()
        .stack_name(stack::LOCAL_STACK)
        .template_body(body.to_string())
        .send()
        .await
        .expect("CreateStack");
    // CloudFormation names a stack's alarms `<stack>-<logical id>-<suffix>`.
    for d in &others {
        let name = format!(
            "{}-DrainErrorsAlarm{}-X1",
            stack::LOCAL_STACK,
            d.replace('-', "")
        );
        put_alarm(cluster, region, &name, Some(TOPIC)).await;
    }
}

async fn put_alarm(cluster: &Cluster, region: &str, name: &str, topic: Option<&str>) {
    let cw = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(&moto_config(cluster, region))
            .http_client(ferry_aws::clients::https_client())
            .build(),
    );
    {
        cw.put_metric_alarm()
            .alarm_name(name)
            .namespace("Ferry")
            .metric_name("DrainErrors")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
            )
            .set_alarm_actions(topic.map(|t| vec![t.to_string()]))
            .send()
            .await
            .expect("PutMetricAlarm");
    }
}

fn template_policy(drain_role: &str) -> String {
    serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "DenySendToOthers", "Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage",
         "Resource": "*",
         "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [
             "arn:aws:iam::123456789012:role/ferry-local-EnqueueRole", drain_role]},
             "Bool": {"aws:PrincipalIsAWSService": "false"}}},
    ]})
    .to_string()
}

/// Sets queue attributes. (moto drops a queue's Policy on any SetQueueAttributes without one:
/// a test that changes another attribute passes the policy again.)
async fn set_attributes(cluster: &Cluster, region: &str, queue: &str, attributes: &[(&str, &str)]) {
    let sqs = cluster.moto.sqs_client(region);
    let url = sqs.get_queue_url().queue_name(queue).send().await;
    let url = url.expect("GetQueueUrl").queue_url.expect("a URL");
    let mut request = sqs.set_queue_attributes().queue_url(url);
    for (name, value) in attributes {
        request = request.attributes((*name).into(), *value);
    }
    request.send().await.expect("SetQueueAttributes");
}

async fn set_policy(cluster: &Cluster, region: &str, queue: &str, policy: &str) {
    set_attributes(cluster, region, queue, &[("Policy", policy)]).await;
}

fn moto_config(cluster: &Cluster, region: &str) -> aws_config::SdkConfig {
    let options = ferry_sandbox::ClientOptions::default();
    ferry_sandbox::sdk_config(&cluster.moto.endpoint(), region, &options)
}

fn cfn_client(cluster: &Cluster, region: &str) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::from_conf(
        aws_sdk_cloudformation::config::Builder::from(&moto_config(cluster, region))
            .http_client(ferry_aws::clients::https_client())
            .build(),
    )
}

/// `ferry VERB … --stack ferry-local --region us-east-1` with the emulators' endpoints.
fn verb(cluster: &Cluster, args: &[&str], stack_args: &[&str]) -> Command {
    let mut c = ferry();
    c.args(args).args(stack_args).arg("--json");
    for r in &cluster.regions {
        let moto = cluster.moto.endpoint();
        for e in [
            format!("dynamodb:{}={}", r.name, r.dynamo.endpoint()),
            format!("sqs:{}={moto}", r.name),
            format!("cloudformation:{}={moto}", r.name),
            format!("cloudwatch:{}={moto}", r.name),
        ] {
            c.arg("--endpoint-url").arg(e);
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn every_verb_runs_with_stack_alone() {
    let started = Instant::now();
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml");
    let (top, per) = template_outputs(&template);
    for k in stack::STACK_OUTPUTS {
        assert!(
            top.iter().any(|t| t == k),
            "template.yaml outputs {k}: {top:?}"
        );
    }
    for k in stack::DESTINATION_OUTPUTS
        .iter()
        .chain([&stack::DESTINATION_ROLE_ARN])
    {
        assert!(
            per.iter().any(|t| t == k),
            "template.yaml outputs {k}&{{Region}}: {per:?}"
        );
    }
    let cluster = Cluster::start(ClusterOptions {
        regions: 2,
        table: TABLE.into(),
        partition_key: "pk".into(),
        drain_budget: Duration::from_secs(4),
        drain_period: Duration::from_secs(2),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    for r in [US, EU] {
        create_stack(&cluster, &template, r).await;
    }
    // `ferry local up`'s paste-able lines: one region each, its own DynamoDB, the shared SQS.
    let exports = cluster.export_lines();
    let us_line = format!(
        "export AWS_REGION={US} AWS_DEFAULT_REGION={US} AWS_ENDPOINT_URL_DYNAMODB={} AWS_ENDPOINT_URL_SQS={} ",
        cluster.regions[0].dynamo.endpoint(),
        cluster.moto.endpoint()
    );
    assert!(exports[0].starts_with(&us_line), "{exports:?}");
    assert_eq!(exports.len(), 2);
    let us = Table::new(cluster.regions[0].dynamo.client(), TABLE);
    for i in 0..5 {
        let item: Item = [
            ("pk".to_string(), AttributeValue::S(format!("k-{i}"))),
            ("v".to_string(), AttributeValue::S("x".into())),
        ]
        .into();
        us.put_if(&item, &Condition::NotExists("pk".into()))
            .await
            .expect("PutItem");
    }
    let stack_alone = ["--stack", stack::LOCAL_STACK, "--region", US];

    // Replication reaches EU; verify (regions and tables from the stacks) then agrees.
    let deadline = Instant::now() + Duration::from_secs(180);
    let verified = loop {
        let (code, json) = run_ferry(verb(&cluster, &["verify"], &stack_alone)).await;
        if code == 0 || Instant::now() > deadline {
            break (code, json);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(verified.0, 0, "{}", verified.1);
    assert_eq!(verified.1["matching"], serde_json::json!(5));

    let (code, status) = run_ferry(verb(&cluster, &["status"], &stack_alone)).await;
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["table"], TABLE);
    assert_eq!(status["buffers"].as_array().map(Vec::len), Some(2));

    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("backfill.json");
    let checkpoint = checkpoint.to_string_lossy();
    let backfill = [
        "backfill",
        "--from",
        US,
        "--to",
        EU,
        "--checkpoint",
        &checkpoint,
    ];
    let (code, json) = run_ferry(verb(&cluster, &backfill, &stack_alone)).await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["scanned"], serde_json::json!(5), "{json}");

    let (code, json) = run_ferry(verb(
        &cluster,
        &["dlq", "list", "--from", US, "--to", EU],
        &stack_alone,
    ))
    .await;
    assert_eq!(code, 0, "{json}");
    let redrive = ["dlq", "redrive", "--all", "--from", EU, "--to", US];
    let (code, json) = run_ferry(verb(&cluster, &redrive, &stack_alone)).await;
    assert_eq!(code, 0, "{json}");

    let (code, json) = run_ferry(verb(&cluster, &["doctor"], &stack_alone)).await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["findings"], serde_json::json!([]));

    // Each misconfiguration doctor lists, planted: a buffer too small, a DLQ that forgets, a
    // buffer open to anyone, an alarm that notifies nobody.
    let policy_us = template_policy(&format!(
        "arn:aws:iam::123456789012:role/{}-{US}-{EU}",
        stack::DRAIN_ROLE_ARN
    ));
    let buffer_us = stack::buffer_name(stack::LOCAL_STACK, EU);
    let small = [("MaximumMessageSize", "262144"), ("Policy", &policy_us)];
    set_attributes(&cluster, US, &buffer_us, &small).await;
    let dlq_us = stack::dlq_name(stack::LOCAL_STACK, EU);
    let forgets = [("MessageRetentionPeriod", "345600"), ("Policy", &policy_us)];
    set_attributes(&cluster, US, &dlq_us, &forgets).await;
    let open = serde_json::json!({"Statement": [{"Sid": "Open", "Effect": "Allow",
        "Principal": "*", "Action": "sqs:*", "Resource": "*"}]});
    set_policy(
        &cluster,
        EU,
        &stack::buffer_name(stack::LOCAL_STACK, US),
        &open.to_string(),
    )
    .await;
    put_alarm(&cluster, EU, "ferry-local-SilentAlarm-X2", None).await;
    let (code, json) = run_ferry(verb(&cluster, &["doctor"], &stack_alone)).await;
    assert_eq!(code, 1, "{json}");
    let found: Vec<String> = json["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| format!("{} {} | {}", f["region"], f["problem"], f["fix"]))
        .collect();
    let has = |needle: &[&str]| found.iter().any(|f| needle.iter().all(|n| f.contains(n)));
    assert!(
        has(&[
            "us-east-1",
            &buffer_us,
            "MaximumMessageSize is 262144",
            "1048576"
        ]),
        "{found:#?}"
    );
    assert!(
        has(&[
            "us-east-1",
            &dlq_us,
            "MessageRetentionPeriod is 345600",
            "1209600"
        ]),
        "{found:#?}"
    );
    assert!(
        has(&["eu-west-1", "statement Open allows anyone", "Principal"]),
        "{found:#?}"
    );
    assert!(
        has(&[
            "eu-west-1",
            "does not keep identities other than Ferry's",
            "DenySendToOthers"
        ]),
        "{found:#?}"
    );
    assert!(
        has(&[
            "eu-west-1",
            "alarm ferry-local-SilentAlarm-X2 notifies nobody",
            "AlarmTopicArn"
        ]),
        "{found:#?}"
    );
    assert_eq!(found.len(), 5, "{found:#?}");

    // Each region's stack named on its own finds the same.
    let per_region = [
        "--stack",
        "us-east-1=ferry-local",
        "--stack",
        "eu-west-1=ferry-local",
    ];
    let (code, json) = run_ferry(verb(&cluster, &["status"], &per_region)).await;
    assert_eq!(code, 0, "{json}");

    // A stack that is not there: the error names it, its region, and the fix.
    let (code, json) = run_ferry(verb(
        &cluster,
        &["status"],
        &["--stack", "nope", "--region", US],
    ))
    .await;
    assert_eq!(code, 2);
    let e = json["error"].as_str().unwrap_or_default();
    assert!(e.contains("us-east-1 stack nope does not exist"), "{e}");
    assert!(e.contains("--stack REGION=NAME"), "{e}");
    // A stack from an older template, without the outputs the tools read: named, with the output.
    let old = serde_json::json!({
        "Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {"TableName": {"Value": TABLE}},
    });
    cfn_client(&cluster, US)
        .create_stack()
        .stack_name("ferry-old")
        .template_body(old.to_string())
        .send()
        .await
        .expect("CreateStack");
    let (code, json) = run_ferry(verb(
        &cluster,
        &["status"],
        &["--stack", "ferry-old", "--region", US],
    ))
    .await;
    assert_eq!(code, 2);
    let e = json["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("us-east-1 stack ferry-old: output `Region` missing"),
        "{e}"
    );

    cluster.shutdown().await;
    eprintln!(
        "[timing] every_verb_runs_with_stack_alone: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
