//! Issue #18's "done when": every operator verb runs against a stack deployed from
//! `template.yaml`, found with `--stack` alone. The sandbox already names its queues as the
//! template names a stack's (`ferry-local-buffer-<dst>`, `ferry-local-dlq-<dst>`); this test
//! reads the template's Outputs and queue names, creates in each region a CloudFormation stack
//! (on moto) whose outputs point at the sandbox's table and queues, and alarms with a topic, then
//! runs status, verify, backfill, dlq list/redrive and doctor through the `ferry` binary. Each
//! drain role exists in moto's IAM with the template's policies, so that doctor's dry-run of
//! the drain's permissions passes; the second test plants what it finds.

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
                stack::DRAIN_FUNCTION => format!("{}-drain-{region}-{d}", stack::LOCAL_STACK),
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
        let function = &outputs[&stack::output_key(stack::DRAIN_FUNCTION, d)];
        let arns = drain_arns(cluster, template, region, d, function).await;
        create_drain_role(cluster, drain_role, &arns).await;
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
    let mut c = verb_text(cluster, args, stack_args);
    c.arg("--json");
    c
}

/// [`verb`] without `--json`.
fn verb_text(cluster: &Cluster, args: &[&str], stack_args: &[&str]) -> Command {
    let mut c = ferry();
    c.args(args).args(stack_args);
    for r in &cluster.regions {
        let moto = cluster.moto.endpoint();
        for e in [
            format!("dynamodb:{}={}", r.name, r.dynamo.endpoint()),
            format!("sqs:{}={moto}", r.name),
            format!("sts:{}={moto}", r.name),
            format!("iam:{}={moto}", r.name),
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

/// What the drain from `region` to `destination` acts on.
struct DrainArns {
    buffer: String,
    dlq: String,
    table: String,
    conflict_table: String,
    function: String,
    logs: String,
}

async fn queue_arn(cluster: &Cluster, region: &str, name: &str) -> String {
    let sqs = cluster.moto.sqs_client(region);
    let url = sqs.get_queue_url().queue_name(name).send().await;
    let url = url.expect("GetQueueUrl").queue_url.expect("a URL");
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes");
    attributes
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .expect("a queue ARN")
}

async fn drain_arns(
    cluster: &Cluster,
    template: &str,
    region: &str,
    destination: &str,
    function: &str,
) -> DrainArns {
    let queue = |kind| template_queue_name(template, kind, stack::LOCAL_STACK, destination);
    let table = |name: &str| format!("arn:aws:dynamodb:{destination}:123456789012:table/{name}");
    DrainArns {
        buffer: queue_arn(cluster, region, &queue("buffer")).await,
        dlq: queue_arn(cluster, region, &queue("dlq")).await,
        table: table(TABLE),
        conflict_table: table(&format!("{TABLE}-ferry-conflicts")),
        function: format!("arn:aws:lambda:{region}:123456789012:function:{function}"),
        logs: format!(
            "arn:aws:logs:{region}:123456789012:log-group:/ferry/{}/drain-{destination}:*",
            stack::LOCAL_STACK
        ),
    }
}

/// template.yaml's `DrainRole&{Region}` policy `drain` (item mode, `ConflictLog=true`, no
/// `DestinationRoleArns`) and its `DrainFanOut&{Region}` policy (`MaxDrainConcurrency` above 1),
/// copied with the ARNs CloudFormation would fill in: the template's `!If`/`!Sub` tags make its
/// YAML impractical to read here, so `the_drain_policy_copy_is_the_templates` holds every action
/// of the copy to the template's text.
fn drain_policies(a: &DrainArns) -> [(&'static str, serde_json::Value); 2] {
    let doc = |statements| serde_json::json!({"Version": "2012-10-17", "Statement": statements});
    [
        (
            "drain",
            doc(serde_json::json!([
                {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": a.logs},
                {"Sid": "Buffer", "Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "sqs:ListQueueTags"], "Resource": a.buffer},
                {"Sid": "DeadLetter", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": a.dlq},
                {"Sid": "ConflictLog", "Effect": "Allow", "Action": ["dynamodb:BatchWriteItem", "dynamodb:PutItem"], "Resource": a.conflict_table},
                {"Sid": "DestinationTable", "Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"], "Resource": a.table},
            ])),
        ),
        (
            "drain-fan-out",
            doc(serde_json::json!([
                {"Sid": "Backlog", "Effect": "Allow", "Action": "sqs:GetQueueAttributes", "Resource": a.buffer},
                {"Sid": "StartWorkers", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": a.function},
            ])),
        ),
    ]
}

/// `policy` without `action` in its statement `sid` (and without the statement if that was its
/// only action: IAM refuses a statement without actions).
fn without_action(policy: &serde_json::Value, sid: &str, action: &str) -> serde_json::Value {
    let mut p = policy.clone();
    if let Some(statements) = p["Statement"].as_array_mut() {
        for s in statements.iter_mut().filter(|s| s["Sid"] == sid) {
            if let Some(actions) = s["Action"].as_array_mut() {
                actions.retain(|a| a != action);
            }
        }
        statements.retain(|s| s["Action"] != serde_json::json!([]));
    }
    p
}

fn iam_client(cluster: &Cluster) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(&moto_config(cluster, US))
            .http_client(ferry_aws::clients::https_client())
            .build(),
    )
}

fn role_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The drain role `arn` in moto's IAM, trusting Lambda, with the template's policies.
async fn create_drain_role(cluster: &Cluster, arn: &str, arns: &DrainArns) {
    let iam = iam_client(cluster);
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let created = iam
        .create_role()
        .role_name(role_name(arn))
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .expect("CreateRole");
    assert_eq!(created.role.map(|r| r.arn), Some(arn.to_string()));
    for (name, policy) in drain_policies(arns) {
        put_role_policy(cluster, arn, name, &policy).await;
    }
}

async fn put_role_policy(cluster: &Cluster, role: &str, name: &str, policy: &serde_json::Value) {
    iam_client(cluster)
        .put_role_policy()
        .role_name(role_name(role))
        .policy_name(name)
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("PutRolePolicy");
}

/// A managed policy named `name`; its ARN.
async fn create_policy(cluster: &Cluster, name: &str, policy: &serde_json::Value) -> String {
    let out = iam_client(cluster)
        .create_policy()
        .policy_name(name)
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("CreatePolicy");
    out.policy.and_then(|p| p.arn).expect("a policy ARN")
}

#[test]
fn the_drain_policy_copy_is_the_templates() {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml");
    let block = |from: &str, to: &str| {
        let start = template
            .find(from)
            .unwrap_or_else(|| panic!("template.yaml has {from}"));
        let rest = &template[start..];
        rest[..rest.find(to).unwrap_or(rest.len())].to_string()
    };
    let role = block("      DrainRole&{Region}:", "      DrainFunction&{Region}:");
    let fan_out = block(
        "      DrainFanOut&{Region}:",
        "      DlqDepthAlarm&{Region}:",
    );
    let arns = DrainArns {
        buffer: "b".into(),
        dlq: "d".into(),
        table: "t".into(),
        conflict_table: "c".into(),
        function: "f".into(),
        logs: "l".into(),
    };
    for ((name, policy), text) in drain_policies(&arns).iter().zip([&role, &fan_out]) {
        for s in policy["Statement"].as_array().into_iter().flatten() {
            let sid = s["Sid"].as_str().unwrap_or_default();
            assert!(
                text.contains(&format!("Sid: {sid}")),
                "{name}: template.yaml has no Sid {sid}"
            );
            let actions: Vec<&str> = match &s["Action"] {
                serde_json::Value::Array(a) => a.iter().filter_map(|a| a.as_str()).collect(),
                other => vec![other.as_str().unwrap_or_default()],
            };
            for a in actions {
                assert!(
                    text.contains(a),
                    "{name} {sid}: template.yaml's block has no {a}"
                );
            }
        }
    }
}

/// Issue #18's dry-run of each permission: the template's drain roles pass; a missing
/// `dynamodb:PutItem`, a missing `sqs:DeleteMessage`, an explicit Deny and a permissions boundary
/// that leaves an action out are each found, with the fix; a conditional Deny is a warning.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_dry_runs_the_drains_permissions() {
    let started = Instant::now();
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml");
    let cluster = Cluster::start(ClusterOptions {
        regions: 2,
        table: TABLE.into(),
        partition_key: "pk".into(),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    for r in [US, EU] {
        create_stack(&cluster, &template, r).await;
    }
    let stack_alone = ["--stack", stack::LOCAL_STACK, "--region", US];
    let (code, json) = run_ferry(verb(&cluster, &["doctor"], &stack_alone)).await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["findings"], serde_json::json!([]));
    assert_eq!(json["warnings"], serde_json::json!([]));

    let role = |from: &str, to: &str| {
        format!(
            "arn:aws:iam::123456789012:role/{}-{from}-{to}",
            stack::DRAIN_ROLE_ARN
        )
    };
    let (us_eu, eu_us) = (role(US, EU), role(EU, US));
    let function = |from: &str, to: &str| format!("{}-drain-{from}-{to}", stack::LOCAL_STACK);
    let a_us = drain_arns(&cluster, &template, US, EU, &function(US, EU)).await;
    let a_eu = drain_arns(&cluster, &template, EU, US, &function(EU, US)).await;
    // us-east-1 → eu-west-1: no PutItem on the table; the DLQ denied by a managed policy; reads
    // from the buffer denied under a condition.
    let [(_, drain_us), _] = drain_policies(&a_us);
    let no_put = without_action(&drain_us, "DestinationTable", "dynamodb:PutItem");
    put_role_policy(&cluster, &us_eu, "drain", &no_put).await;
    let deny = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Sid": "NoDeadLetters",
        "Effect": "Deny", "Action": "sqs:SendMessage", "Resource": a_us.dlq}]});
    let deny_arn = create_policy(&cluster, "no-dead-letters", &deny).await;
    iam_client(&cluster)
        .attach_role_policy()
        .role_name(role_name(&us_eu))
        .policy_arn(&deny_arn)
        .send()
        .await
        .expect("AttachRolePolicy");
    let tls = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Sid": "TlsOnly",
        "Effect": "Deny", "Action": "sqs:ReceiveMessage", "Resource": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]});
    put_role_policy(&cluster, &us_eu, "tls-only", &tls).await;
    // eu-west-1 → us-east-1: no DeleteMessage on the buffer; a boundary without ListQueueTags.
    let [(_, drain_eu), _] = drain_policies(&a_eu);
    let no_delete = without_action(&drain_eu, "Buffer", "sqs:DeleteMessage");
    put_role_policy(&cluster, &eu_us, "drain", &no_delete).await;
    let boundary = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "NotAction": "sqs:ListQueueTags", "Resource": "*"}]});
    let boundary_arn = create_policy(&cluster, "ferry-boundary", &boundary).await;
    iam_client(&cluster)
        .put_role_permissions_boundary()
        .role_name(role_name(&eu_us))
        .permissions_boundary(&boundary_arn)
        .send()
        .await
        .expect("PutRolePermissionsBoundary");

    let (code, json) = run_ferry(verb(&cluster, &["doctor"], &stack_alone)).await;
    assert_eq!(code, 1, "{json}");
    let lines = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| format!("{} {} | {}", f["region"], f["problem"], f["fix"]))
            .collect()
    };
    let (found, warned) = (lines("findings"), lines("warnings"));
    let has = |lines: &[String], needle: &[&str]| {
        lines.iter().any(|f| needle.iter().all(|n| f.contains(n)))
    };
    let put_fix = format!(
        "add dynamodb:PutItem on {} to role {}'s policy, as template.yaml's DrainRole does",
        a_us.table,
        role_name(&us_eu)
    );
    assert!(
        has(&found, &[US, &us_eu, "lacks dynamodb:PutItem", &put_fix]),
        "{found:#?}"
    );
    let delete_fix = format!(
        "add sqs:DeleteMessage on {} to role {}'s policy, as template.yaml's DrainRole does",
        a_eu.buffer,
        role_name(&eu_us)
    );
    assert!(
        has(
            &found,
            &[EU, &eu_us, "lacks sqs:DeleteMessage", &delete_fix]
        ),
        "{found:#?}"
    );
    let denied = format!(
        "sqs:SendMessage on {} is denied by policy {deny_arn} statement NoDeadLetters",
        a_us.dlq
    );
    assert!(
        has(
            &found,
            &[US, &denied, "remove sqs:SendMessage", "explicit Deny wins"]
        ),
        "{found:#?}"
    );
    let outside = format!(
        "permissions boundary {boundary_arn} does not allow sqs:ListQueueTags on {}",
        a_eu.buffer
    );
    assert!(
        has(&found, &[EU, &outside, "or remove the boundary"]),
        "{found:#?}"
    );
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(
        has(&warned, &[US, "sqs:ReceiveMessage", "depends on a condition (policy tls-only statement TlsOnly: Bool aws:SecureTransport)", "simulate-principal-policy"]),
        "{warned:#?}"
    );
    assert_eq!(warned.len(), 1, "{warned:#?}");

    // The text output: each finding with its fix, the warning with what to check.
    let out = verb_text(&cluster, &["doctor"], &stack_alone)
        .output()
        .expect("running ferry");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("    fix: {put_fix}\n")), "{text}");
    assert!(text.contains(&format!("    fix: {delete_fix}\n")), "{text}");
    assert!(text.contains("us-east-1: warning: drain role"), "{text}");
    assert!(
        text.contains("    check: doctor does not evaluate conditions"),
        "{text}"
    );

    cross_account(&cluster, &a_us).await;

    cluster.shutdown().await;
    eprintln!(
        "[timing] doctor_dry_runs_the_drains_permissions: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A stack whose drain to eu-west-1 reaches the table through a destination role (in the same
/// account, which the template allows): its drain role needs only `sts:AssumeRole` on it of the
/// DynamoDB side, and the destination role the table's and the conflict log's permissions.
async fn cross_account(cluster: &Cluster, a: &DrainArns) {
    const XACCT: &str = "ferry-xacct";
    let writer = "arn:aws:iam::123456789012:role/ferry-writer";
    let drain = "arn:aws:iam::123456789012:role/ferry-xacct-drain";
    let cfn = cfn_client(cluster, US);
    let local = cfn
        .describe_stacks()
        .stack_name(stack::LOCAL_STACK)
        .send()
        .await;
    let local = local.expect("DescribeStacks");
    let mut outputs: BTreeMap<String, String> = local.stacks()[0]
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect();
    outputs.insert(stack::output_key(stack::DRAIN_ROLE_ARN, EU), drain.into());
    outputs.insert(
        stack::output_key(stack::DESTINATION_ROLE_ARN, EU),
        writer.into(),
    );
    let body = serde_json::json!({
        "Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": outputs.iter().map(|(k, v)| (k.clone(), serde_json::json!({"Value": v})))
            .collect::<serde_json::Map<_, _>>(),
    });
    cfn.create_stack()
        .stack_name(XACCT)
        .template_body(body.to_string())
        .send()
        .await
        .expect("CreateStack");
    // template.yaml's DrainRole with DestinationRoleArns set: the DestinationRole statement
    // instead of DestinationTable, and no ConflictLog (ConflictLogDirect is false).
    let [(_, own), (_, fan_out)] = drain_policies(a);
    let mut own = own;
    if let Some(statements) = own["Statement"].as_array_mut() {
        statements.retain(|s| s["Sid"] != "DestinationTable" && s["Sid"] != "ConflictLog");
        statements.push(serde_json::json!({"Sid": "DestinationRole", "Effect": "Allow", "Action": ["sts:AssumeRole"], "Resource": writer}));
    }
    let iam = iam_client(cluster);
    for (role, principal) in [
        (
            drain,
            serde_json::json!({"Service": "lambda.amazonaws.com"}),
        ),
        (writer, serde_json::json!({"AWS": drain})),
    ] {
        let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]});
        iam.create_role()
            .role_name(role_name(role))
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
            .expect("CreateRole");
    }
    put_role_policy(cluster, drain, "drain", &own).await;
    put_role_policy(cluster, drain, "drain-fan-out", &fan_out).await;
    // docs/operations.md's destination role, and the conflict log it must grant (#conflicts).
    let table = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Table", "Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"], "Resource": a.table},
        {"Sid": "ConflictLog", "Effect": "Allow", "Action": "dynamodb:BatchWriteItem", "Resource": a.conflict_table},
    ]});
    put_role_policy(cluster, writer, "ferry-table", &table).await;
    let stacks = [
        "--stack",
        "us-east-1=ferry-xacct",
        "--stack",
        "eu-west-1=ferry-local",
    ];
    let drains_of = |json: &serde_json::Value, key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| {
                let p = f["problem"].as_str().unwrap_or_default();
                p.starts_with(&format!("drain role {drain}")) || p.starts_with("destination role")
            })
            .map(|f| format!("{} {} | {}", f["region"], f["problem"], f["fix"]))
            .collect()
    };
    let (_, json) = run_ferry(verb(cluster, &["doctor"], &stacks)).await;
    assert_eq!(drains_of(&json, "findings"), Vec::<String>::new(), "{json}");
    assert_eq!(drains_of(&json, "warnings"), Vec::<String>::new(), "{json}");

    let no_put = without_action(&table, "Table", "dynamodb:PutItem");
    put_role_policy(cluster, writer, "ferry-table", &no_put).await;
    let no_assume = without_action(&own, "DestinationRole", "sts:AssumeRole");
    put_role_policy(cluster, drain, "drain", &no_assume).await;
    let (code, json) = run_ferry(verb(cluster, &["doctor"], &stacks)).await;
    assert_eq!(code, 1, "{json}");
    let found = drains_of(&json, "findings");
    let has = |needle: &[&str]| found.iter().any(|f| needle.iter().all(|n| f.contains(n)));
    assert!(
        has(&[US, &format!("drain role {drain} (to {EU}) lacks sts:AssumeRole on {writer}"), "add sts:AssumeRole on arn:aws:iam::123456789012:role/ferry-writer to role ferry-xacct-drain's policy"]),
        "{found:#?}"
    );
    assert!(
        has(&[US, &format!("destination role {writer} (the drain to {EU} assumes it) lacks dynamodb:PutItem on {}", a.table), "to role ferry-writer's policy, as docs/operations.md's destination role does"]),
        "{found:#?}"
    );
    assert_eq!(found.len(), 2, "{found:#?}");
}
