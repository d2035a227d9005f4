//! `ferry doctor`: what a region needs before and after deploying Ferry, checked on the live
//! tables, queues and (with `--stack`) the stack's alarms and the drains' IAM permissions. The
//! reads are thin ([`read_region`]); what counts as a finding, and what to change for it, is
//! decided by the pure [`findings`] and [`warnings`] (the queue and alarm rules in
//! `doctor_checks`, the drain's permissions in `doctor_iam`).

use super::doctor_checks::{self, Alarm, AlarmFacts, QueueFacts};
use super::doctor_iam::{self, Arns, Document, DrainFacts, RoleRead};
use super::stack::DestinationOutputs;
use super::status::NEEDED_VIEW_TYPE;
use super::target::{Service, Target, TargetArgs};
use super::{finish, OpsError, EXIT_FOUND, EXIT_OK};
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Args, Clone, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The regions, comma-separated (default with --local or --stack: every region of the sandbox or the stacks).
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Print one JSON object instead of the findings.
    #[arg(long)]
    pub json: bool,
}

/// What was read of one region; `None` where it could not be read (the error is a finding).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RegionFacts {
    pub region: String,
    pub table: String,
    pub error: Option<String>,
    pub stream_view_type: Option<String>,
    pub partition_key: Option<String>,
    pub sort_key: Option<String>,
    pub ttl_attribute: Option<String>,
    /// The `ferry:settings` tag its enqueue publishes.
    pub settings: Option<String>,
    /// The `ferry:merge-mode` tag its enqueue publishes (the mode its drains write in).
    pub merge_mode: Option<String>,
    /// Queues of this region (its buffers to each destination) that could not be found: why.
    pub missing_queues: Vec<String>,
    /// The buffers and DLQs of this region that could be read.
    pub queues: Vec<QueueFacts>,
    /// The stack's alarms here (with `--stack`).
    pub alarms: Option<AlarmFacts>,
    /// This region's drains (one per destination) and their roles' policies (with `--stack`).
    pub drains: Vec<DrainFacts>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub region: String,
    pub problem: String,
    pub fix: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DoctorReport {
    pub regions: Vec<RegionFacts>,
    pub findings: Vec<Finding>,
    /// What doctor could not tell or check (a policy condition, a role it cannot read), and how
    /// to check it; these do not make the exit code 1.
    pub warnings: Vec<Finding>,
}

/// Every finding of these regions; `ttl_attribute` is the attribute the tombstones expire by.
pub fn findings(regions: &[RegionFacts], ttl_attribute: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |r: &RegionFacts, problem: String, fix: String| {
        out.push(Finding {
            region: r.region.clone(),
            problem,
            fix,
        })
    };
    let first = regions.iter().find(|r| r.error.is_none());
    for r in regions {
        if let Some(e) = &r.error {
            add(
                r,
                format!("table {} cannot be read: {e}", r.table),
                "see the error".into(),
            );
            continue;
        }
        if r.stream_view_type.as_deref() != Some(NEEDED_VIEW_TYPE) {
            let now = r.stream_view_type.as_deref().unwrap_or("off");
            add(
                r,
                format!("table {}: stream is {now}", r.table),
                format!("enable the table's stream with StreamViewType {NEEDED_VIEW_TYPE}"),
            );
        }
        if r.ttl_attribute.as_deref() != Some(ttl_attribute) {
            let now = r.ttl_attribute.as_deref().unwrap_or("off");
            add(
                r,
                format!("table {}: TTL is {now}", r.table),
                format!("enable TTL on attribute `{ttl_attribute}` (tombstones expire by it)"),
            );
        }
        if let Some(f) = first.filter(|f| f.region != r.region) {
            if (&f.partition_key, &f.sort_key) != (&r.partition_key, &r.sort_key) {
                add(
                    r,
                    format!(
                        "table {}: key schema {:?}/{:?} differs from {}'s {:?}/{:?}",
                        r.table, r.partition_key, r.sort_key, f.region, f.partition_key, f.sort_key
                    ),
                    "every region's table needs the same partition and sort key".into(),
                );
            }
            if f.settings.is_some() && r.settings.is_some() && f.settings != r.settings {
                add(
                    r,
                    format!("table {}: Ferry settings differ from {}'s", r.table, f.region),
                    "deploy every region with the same FERRY_* settings (attribute names, tombstone lifetime, filter, merge mode)".into(),
                );
            }
        }
        for q in &r.missing_queues {
            add(
                r,
                q.clone(),
                "deploy the region's stack, or name the stack (--stack) or queues (--buffer-name, --dlq-name)".into(),
            );
        }
        let queues = r.queues.iter().flat_map(doctor_checks::queue_problems);
        let alarms = r.alarms.iter().flat_map(doctor_checks::alarm_problems);
        let drains = r.drains.iter().flat_map(|d| doctor_iam::judge(d).problems);
        for (problem, fix) in queues.chain(alarms).chain(drains).collect::<Vec<_>>() {
            add(r, problem, fix);
        }
    }
    out
}

/// What doctor could not tell of these regions, and how to check it.
pub fn warnings(regions: &[RegionFacts]) -> Vec<Finding> {
    regions
        .iter()
        .flat_map(|r| {
            r.drains
                .iter()
                .flat_map(|d| doctor_iam::judge(d).warnings)
                .map(|(problem, fix)| Finding {
                    region: r.region.clone(),
                    problem,
                    fix,
                })
        })
        .collect()
}

/// Reads what [`findings`] judges of `region`, its buffers to `peers` included.
pub async fn read_region(target: &Target, region: &str, peers: &[String]) -> RegionFacts {
    let table = target.table(region).await;
    let mut facts = RegionFacts {
        region: region.to_string(),
        table: table.name.clone(),
        ..RegionFacts::default()
    };
    let described = match table.describe().await {
        Ok(d) => d,
        Err(e) => {
            facts.error = Some(
                e.context(format_args!("{region} table {}", table.name))
                    .to_string(),
            );
            return facts;
        }
    };
    facts.stream_view_type = described.stream_view_type;
    facts.partition_key = described.partition_key;
    facts.sort_key = described.sort_key;
    facts.ttl_attribute = table.ttl_attribute().await.ok().flatten();
    if let Some(arn) = &described.arn {
        let tags = table.tags(arn).await.unwrap_or_default();
        let tag = |name: &str| tags.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        facts.settings = tag(ferry_core::peer::TAG_SETTINGS);
        facts.merge_mode = tag(ferry_core::peer::TAG_MERGE_MODE);
    }
    for peer in peers.iter().filter(|p| *p != region) {
        match read_queues(target, region, peer).await {
            Ok(mut q) => facts.queues.append(&mut q),
            Err(e) => facts.missing_queues.push(e.to_string()),
        }
    }
    if let Some(stack) = target.stacks.get(region) {
        facts.alarms = Some(read_alarms(target, region, &stack.stack).await);
        let attribute_mode = facts
            .merge_mode
            .as_deref()
            .and_then(|m| ferry_core::MergeMode::parse(m).ok())
            == Some(ferry_core::MergeMode::Attribute);
        for (peer, outputs) in stack.destinations.iter().filter(|(p, _)| peers.contains(p)) {
            let mut drain = read_drain(target, region, peer, outputs).await;
            drain.attribute_mode = attribute_mode;
            drain.conflict_log = stack.conflict_table.is_some();
            facts.drains.push(drain);
        }
    }
    facts
}

/// What the drain from `region` to `peer` needs its permissions judged: its role's policies,
/// the ARNs it acts on, and the destination role's policies when it assumes one.
async fn read_drain(
    target: &Target,
    region: &str,
    peer: &str,
    outputs: &DestinationOutputs,
) -> DrainFacts {
    let iam = target.iam(region).await;
    let mut facts = DrainFacts {
        destination: peer.to_string(),
        role: read_role(&iam, &outputs.drain_role_arn).await,
        ..DrainFacts::default()
    };
    match drain_arns(target, &iam, region, peer, outputs).await {
        Ok(arns) => facts.arns = Some(arns),
        Err(e) => facts.error = Some(e.to_string()),
    }
    if let Some(role) = &outputs.role_arn {
        facts.destination_role = Some(read_destination_role(target, peer, role).await);
    }
    facts
}

/// The ARNs of the drain's calls: the queues' from SQS, the rest built in the caller's account
/// (the table's in the destination role's account when the drain assumes one).
async fn drain_arns(
    target: &Target,
    iam: &ferry_aws::iam::Iam,
    region: &str,
    peer: &str,
    o: &DestinationOutputs,
) -> Result<Arns, OpsError> {
    let me = iam
        .caller()
        .await
        .map_err(|e| e.context(format_args!("{region} caller")))?;
    let partition = doctor_iam::arn_account(&me.arn).map_or("aws", |(p, _)| p);
    let table_account = o
        .role_arn
        .as_deref()
        .and_then(doctor_iam::arn_account)
        .map_or(me.account.as_str(), |(_, a)| a);
    let (buffer, dlq) = target.queues(region, peer).await?;
    let arn = |q: ferry_aws::Buffer| async move {
        let url = q.queue_url.clone();
        q.arn()
            .await
            .map_err(|e| e.context(format_args!("{region} queue {url}")))
    };
    let log = ferry_core::conflict::log_table_name(&o.table);
    Ok(Arns {
        buffer: arn(buffer).await?,
        dlq: arn(dlq).await?,
        table: doctor_iam::table_arn(partition, peer, table_account, &o.table),
        conflict_table: doctor_iam::table_arn(partition, peer, table_account, &log),
        function: doctor_iam::function_arn(partition, region, &me.account, &o.drain_function),
    })
}

/// A role's policies as IAM gives them; a role that is not there, or cannot be read, says so.
async fn read_role(iam: &ferry_aws::iam::Iam, arn: &str) -> RoleRead {
    let mut role = RoleRead {
        arn: arn.to_string(),
        ..RoleRead::default()
    };
    let document = |(name, text)| Document { name, text };
    match iam.role_policies(doctor_iam::role_name(arn)).await {
        Ok(p) => {
            role.policies = p.policies.into_iter().map(document).collect();
            role.boundary = p.boundary.map(document);
        }
        Err(e) if e.code.as_deref() == Some("NoSuchEntity") => role.missing = true,
        Err(e) => role.error = Some(e.to_string()),
    }
    role
}

/// The destination role, read with `peer`'s credentials (`--role-arn PEER=…`) when they are
/// in its account; GetRole reads only the caller's own account.
async fn read_destination_role(target: &Target, peer: &str, arn: &str) -> RoleRead {
    let iam = target.iam(peer).await;
    let account = doctor_iam::arn_account(arn).map_or("", |(_, a)| a);
    let error = match iam.caller().await {
        Ok(me) if me.account == account => return read_role(&iam, arn).await,
        Ok(me) => format!(
            "it is in account {account}, and the credentials doctor uses for {peer} are in {}",
            me.account
        ),
        Err(e) => e.to_string(),
    };
    RoleRead {
        arn: arn.to_string(),
        error: Some(error),
        ..RoleRead::default()
    }
}

/// The settings of the buffer and DLQ from `region` to `peer`.
async fn read_queues(
    target: &Target,
    region: &str,
    peer: &str,
) -> Result<Vec<QueueFacts>, OpsError> {
    let (buffer, dlq) = target.queues(region, peer).await?;
    let drain_role = target
        .stacks
        .get(region)
        .and_then(|s| s.destinations.get(peer))
        .map(|d| d.drain_role_arn.clone());
    let mut out = Vec::new();
    for (kind, queue) in [("buffer", buffer), ("dlq", dlq)] {
        let settings = queue.settings().await.map_err(|e| {
            e.context(format_args!(
                "{region} {kind} to {peer} ({})",
                queue.queue_url
            ))
        })?;
        out.push(QueueFacts {
            kind: kind.into(),
            destination: peer.to_string(),
            url: queue.queue_url.clone(),
            settings,
            drain_role: drain_role.clone(),
        });
    }
    Ok(out)
}

/// The stack's alarms in `region` (CloudFormation names them `<stack>-<logical id>-<suffix>`).
async fn read_alarms(target: &Target, region: &str, stack: &str) -> AlarmFacts {
    let endpoint = target.endpoint(region, Service::CloudWatch);
    let prefix = format!("{stack}-");
    let read = ferry_aws::stack::alarms(target.base(), region, endpoint, &prefix).await;
    let mut facts = AlarmFacts {
        stack: stack.to_string(),
        ..AlarmFacts::default()
    };
    match read {
        Ok(alarms) => {
            facts.alarms = alarms
                .into_iter()
                .map(|a| Alarm {
                    name: a.name,
                    actions: a.alarm_actions,
                    actions_enabled: a.actions_enabled,
                })
                .collect()
        }
        Err(e) => facts.error = Some(e.to_string()),
    }
    facts
}

pub async fn run(target: &Target, regions: &[String]) -> Result<DoctorReport, OpsError> {
    let regions = target.regions(regions)?;
    let facts =
        futures::future::join_all(regions.iter().map(|r| read_region(target, r, &regions))).await;
    let ttl = ferry_core::AttributeNames::default().ttl;
    let ttl = std::env::var("FERRY_ATTR_TTL").unwrap_or(ttl);
    let findings = findings(&facts, &ttl);
    let warnings = warnings(&facts);
    Ok(DoctorReport {
        regions: facts,
        findings,
        warnings,
    })
}

pub fn render(r: &DoctorReport) -> String {
    let mut out = String::new();
    if r.findings.is_empty() {
        out += &format!("{} regions checked: nothing to change\n", r.regions.len());
    }
    for f in &r.findings {
        out += &format!("{}: {}\n    fix: {}\n", f.region, f.problem, f.fix);
    }
    for w in &r.warnings {
        out += &format!(
            "{}: warning: {}\n    check: {}\n",
            w.region, w.problem, w.fix
        );
    }
    out
}

pub async fn main(args: DoctorArgs) -> ExitCode {
    let result = async {
        let target = Target::connect(&args.target).await?;
        run(&target, &args.regions).await
    }
    .await;
    finish("doctor", args.json, result, render, |r| {
        if r.findings.is_empty() {
            EXIT_OK
        } else {
            EXIT_FOUND
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(region: &str) -> RegionFacts {
        RegionFacts {
            region: region.into(),
            table: "orders".into(),
            stream_view_type: Some(NEEDED_VIEW_TYPE.into()),
            partition_key: Some("pk".into()),
            ttl_attribute: Some("ferry_ttl".into()),
            settings: Some("s1".into()),
            ..RegionFacts::default()
        }
    }

    #[test]
    fn a_healthy_cluster_has_no_findings() {
        assert!(findings(&[healthy("a"), healthy("b")], "ferry_ttl").is_empty());
    }

    #[test]
    fn each_misconfiguration_is_found_with_its_fix() {
        let mut b = healthy("b");
        b.stream_view_type = Some("NEW_IMAGE".into());
        b.ttl_attribute = None;
        b.sort_key = Some("sk".into());
        b.settings = Some("s2".into());
        b.missing_queues = vec!["GetQueueUrl: b queue x-buffer-a: not found".into()];
        let f = findings(&[healthy("a"), b], "ferry_ttl");
        let text: Vec<String> = f
            .iter()
            .map(|f| format!("{} {}", f.problem, f.fix))
            .collect();
        assert_eq!(f.len(), 5, "{text:#?}");
        assert!(f.iter().all(|f| f.region == "b"));
        assert!(text[0].contains("stream is NEW_IMAGE") && text[0].contains(NEEDED_VIEW_TYPE));
        assert!(text[1].contains("TTL is off") && text[1].contains("`ferry_ttl`"));
        assert!(text[2].contains("key schema"));
        assert!(text[3].contains("settings differ"));
        assert!(text[4].contains("x-buffer-a") && text[4].contains("--stack"));
        let mut c = healthy("c");
        c.error = Some("identity".into());
        assert_eq!(findings(&[c], "ferry_ttl").len(), 1);
    }

    #[test]
    fn a_drain_role_that_cannot_be_read_is_a_warning_not_a_finding() {
        let mut a = healthy("a");
        a.drains.push(DrainFacts {
            destination: "b".into(),
            role: RoleRead {
                arn: "arn:aws:iam::123456789012:role/drain".into(),
                error: Some("GetRole: identity (credentials or access): denied".into()),
                ..RoleRead::default()
            },
            arns: Some(Arns::default()),
            ..DrainFacts::default()
        });
        let regions = [a, healthy("b")];
        assert!(findings(&regions, "ferry_ttl").is_empty());
        let report = DoctorReport {
            findings: Vec::new(),
            warnings: warnings(&regions),
            regions: regions.to_vec(),
        };
        let text = render(&report);
        assert!(
            text.starts_with("2 regions checked: nothing to change\n"),
            "{text}"
        );
        assert!(text.contains("a: warning: drain role arn:aws:iam::123456789012:role/drain (to b): its permissions are not checked"), "{text}");
        assert!(
            text.contains("\n    check: let the identity running doctor read IAM"),
            "{text}"
        );
    }
}
