//! What the operator CLI reads of a deployed stack (feature `stack`; the Lambda bootstraps build
//! without it): the stack's outputs (CloudFormation `DescribeStacks`) and its alarms
//! (CloudWatch `DescribeAlarms`). Reading them means nothing; the CLI decides.

use crate::clients::https_client;
use crate::error::{classify_sdk_error, AwsError, ErrorKind};
use aws_config::{Region, SdkConfig};
use std::collections::BTreeMap;

/// One alarm's name and where it notifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmActions {
    pub name: String,
    pub alarm_actions: Vec<String>,
    pub actions_enabled: bool,
}

/// The outputs (key → value) of stack `name` in `region`; `endpoint` overrides CloudFormation's
/// (emulators, VPC endpoints). A stack that does not exist is a `NotFound` naming it.
pub async fn stack_outputs(
    base: &SdkConfig,
    region: &str,
    endpoint: Option<&str>,
    name: &str,
) -> Result<BTreeMap<String, String>, AwsError> {
    let mut b =
        aws_sdk_cloudformation::config::Builder::from(base).region(Region::new(region.to_string()));
    if base.http_client().is_none() {
        b = b.http_client(https_client());
    }
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    let client = aws_sdk_cloudformation::Client::from_conf(b.build());
    let place = format_args!("{region} stack {name}").to_string();
    let out = client
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| {
            let e = classify_sdk_error("DescribeStacks", &e);
            // CloudFormation says a missing stack with a ValidationError ("does not exist").
            if e.message.contains("does not exist") {
                not_found(&place)
            } else {
                e.context(&place)
            }
        })?;
    let stack = out.stacks().first().ok_or_else(|| not_found(&place))?;
    Ok(stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect())
}

fn not_found(place: &str) -> AwsError {
    AwsError {
        operation: "DescribeStacks",
        kind: ErrorKind::Other,
        code: Some("StackNotFound".into()),
        message: format!(
            "{place} does not exist (fix: deploy template.yaml under that name in that region, or name each region's stack: --stack REGION=NAME)"
        ),
    }
}

/// Every alarm whose name starts with `prefix` (a stack's alarms are `<stack>-…`) in `region`.
pub async fn alarms(
    base: &SdkConfig,
    region: &str,
    endpoint: Option<&str>,
    prefix: &str,
) -> Result<Vec<AlarmActions>, AwsError> {
    let mut b =
        aws_sdk_cloudwatch::config::Builder::from(base).region(Region::new(region.to_string()));
    // The SDK crates here come without an HTTP client of their own (the lean build).
    if base.http_client().is_none() {
        b = b.http_client(https_client());
    }
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    let client = aws_sdk_cloudwatch::Client::from_conf(b.build());
    let mut found = Vec::new();
    let mut next = None;
    loop {
        let out = client
            .describe_alarms()
            .alarm_name_prefix(prefix)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| {
                classify_sdk_error("DescribeAlarms", &e)
                    .context(format_args!("{region} alarms {prefix}*"))
            })?;
        found.extend(out.metric_alarms().iter().map(|a| AlarmActions {
            name: a.alarm_name().unwrap_or_default().to_string(),
            alarm_actions: a.alarm_actions().to_vec(),
            actions_enabled: a.actions_enabled().unwrap_or(true),
        }));
        next = out.next_token().map(str::to_string);
        if next.is_none() {
            return Ok(found);
        }
    }
}
