//! `ferry doctor`'s dry-run of the drain's permissions (pure): every call the drain makes
//! ([`DRAIN_PERMISSIONS`], the one list), on the resource it makes it on, judged against the
//! identity policies and permissions boundary read from IAM (`iam_policy`). Through a
//! destination role (cross-account), the drain's role needs `sts:AssumeRole` on it and the
//! destination role the table's permissions; that role is judged when the operator's
//! credentials can read it, and a warning says what was not checked otherwise.

use super::iam_policy::{self, Decision, Policy};
use serde::Serialize;

/// The resource a permission is needed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    Buffer,
    Dlq,
    DestinationTable,
    /// The destination's conflict log (`<destination table>-ferry-conflicts`).
    ConflictTable,
    /// The role the drain assumes in the destination's account.
    DestinationRole,
    /// The drain's own function (the fan-out starts workers of it).
    DrainFunction,
}

/// When the drain makes the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    ItemMode,
    AttributeMode,
    /// The stack keeps a conflict log (`ConflictLog=true`).
    ConflictLog,
    /// The stack reaches its destinations through roles (`DestinationRoleArns`).
    CrossAccount,
    /// More than one drain per tick (`MaxDrainConcurrency` above 1), which the outputs do not
    /// say: a missing permission here is a warning, and the tick drains alone without it.
    FanOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub action: &'static str,
    pub on: On,
    pub when: When,
    /// The `ferry_aws` call that needs it.
    pub call: &'static str,
}

const fn p(action: &'static str, on: On, when: When, call: &'static str) -> Permission {
    Permission {
        action,
        on,
        when,
        call,
    }
}

/// Every permission the drain's calls need (the batch calls authorise as their single form).
#[rustfmt::skip]
pub const DRAIN_PERMISSIONS: &[Permission] = &[
    p("sqs:ReceiveMessage", On::Buffer, When::Always, "Buffer::receive_with_attributes"),
    p("sqs:DeleteMessage", On::Buffer, When::Always, "Buffer::delete (DeleteMessageBatch)"),
    p("sqs:SendMessage", On::Buffer, When::Always, "Buffer::send_batch_with (re-queue, renew)"),
    p("sqs:ListQueueTags", On::Buffer, When::Always, "Buffer::pause"),
    p("sqs:SendMessage", On::Dlq, When::Always, "Buffer::send_with_reason (dead-letter)"),
    p("dynamodb:DescribeTable", On::DestinationTable, When::Always, "Table::ping, Table::arn"),
    p("dynamodb:ListTagsOfResource", On::DestinationTable, When::Always, "peer::check_destination"),
    p("dynamodb:PutItem", On::DestinationTable, When::ItemMode, "Table::put_if"),
    // A refused put returns the stored item (ALL_OLD): a read of it.
    p("dynamodb:GetItem", On::DestinationTable, When::Always, "Table::put_if (ALL_OLD), Table::get"),
    p("dynamodb:UpdateItem", On::DestinationTable, When::AttributeMode, "Table::update_if"),
    p("dynamodb:BatchWriteItem", On::ConflictTable, When::ConflictLog, "ConflictLog::write"),
    p("sts:AssumeRole", On::DestinationRole, When::CrossAccount, "ClientSettings::table_config"),
    p("sqs:GetQueueAttributes", On::Buffer, When::FanOut, "Buffer::depth"),
    p("lambda:InvokeFunction", On::DrainFunction, When::FanOut, "Function::start"),
];

/// One policy document as read (JSON text).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Document {
    /// The inline policy's name, or the managed policy's ARN.
    pub name: String,
    pub text: String,
}

/// A role's identity policies and boundary as read.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RoleRead {
    pub arn: String,
    pub policies: Vec<Document>,
    pub boundary: Option<Document>,
    /// The role does not exist.
    pub missing: bool,
    /// Why its policies could not be read (then nothing is judged on it).
    pub error: Option<String>,
}

/// The ARNs the drain's calls act on.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Arns {
    pub buffer: String,
    pub dlq: String,
    pub table: String,
    pub conflict_table: String,
    pub function: String,
}

/// What was read for one drain (a source region's drain to `destination`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DrainFacts {
    pub destination: String,
    pub role: RoleRead,
    /// `None` when they could not be resolved (`error` says why).
    pub arns: Option<Arns>,
    pub error: Option<String>,
    pub attribute_mode: bool,
    pub conflict_log: bool,
    /// The role the drain assumes (cross-account), as read, or why not (`error`).
    pub destination_role: Option<RoleRead>,
}

/// (problem, fix) pairs: certain findings, and warnings (what could not be told or checked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Judged {
    pub problems: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

/// The ARN of `table` in `region` of `account` (`partition` is `aws` outside China and GovCloud).
pub fn table_arn(partition: &str, region: &str, account: &str, table: &str) -> String {
    format!("arn:{partition}:dynamodb:{region}:{account}:table/{table}")
}

/// The ARN of the Lambda function `name` in `region` of `account`.
pub fn function_arn(partition: &str, region: &str, account: &str, name: &str) -> String {
    format!("arn:{partition}:lambda:{region}:{account}:function:{name}")
}

/// The (partition, account) of an ARN (`arn:aws:iam::123456789012:role/x` → aws, 123456789012).
pub fn arn_account(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.split(':');
    let (_, partition, _, _, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (!partition.is_empty() && !account.is_empty()).then_some((partition, account))
}

/// A role's name: the last part of its ARN's path (`role/ops/ferry` → `ferry`).
pub fn role_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl DrainFacts {
    /// Whether the drain makes this call, for this stack.
    fn needs(&self, when: When) -> bool {
        match when {
            When::Always | When::FanOut => true,
            When::ItemMode => !self.attribute_mode,
            When::AttributeMode => self.attribute_mode,
            When::ConflictLog => self.conflict_log,
            When::CrossAccount => self.destination_role.is_some(),
        }
    }

    /// The role that holds this permission: the table's go to the destination role when there is one.
    fn holder(&self, on: On) -> &RoleRead {
        match (&self.destination_role, on) {
            (Some(r), On::DestinationTable | On::ConflictTable) => r,
            _ => &self.role,
        }
    }
}

fn resource(arns: &Arns, facts: &DrainFacts, on: On) -> String {
    match on {
        On::Buffer => arns.buffer.clone(),
        On::Dlq => arns.dlq.clone(),
        On::DestinationTable => arns.table.clone(),
        On::ConflictTable => arns.conflict_table.clone(),
        On::DrainFunction => arns.function.clone(),
        On::DestinationRole => facts
            .destination_role
            .as_ref()
            .map(|r| r.arn.clone())
            .unwrap_or_default(),
    }
}

/// Every permission the drain needs that its roles do not certainly have.
pub fn judge(d: &DrainFacts) -> Judged {
    let mut out = Judged::default();
    let Some(arns) = &d.arns else {
        out.warnings.push((
            format!(
                "the drain to {}'s permissions are not checked: {}",
                d.destination,
                d.error.as_deref().unwrap_or("its resources are unknown")
            ),
            "see the error; doctor needs sts:GetCallerIdentity and sqs:GetQueueAttributes".into(),
        ));
        return out;
    };
    let roles = std::iter::once(&d.role).chain(d.destination_role.as_ref());
    let mut parsed = Vec::new();
    for r in roles {
        match read_problem(r, d) {
            Some((problem, fix, true)) => out.problems.push((problem, fix)),
            Some((problem, fix, false)) => out.warnings.push((problem, fix)),
            None => match parse_role(r) {
                Ok(p) => parsed.push((r.arn.as_str(), p)),
                Err(e) => out.warnings.push((
                    format!("{}: {e}", who(r, d)),
                    "doctor could not read the policy; check it in the IAM console".into(),
                )),
            },
        }
    }
    for perm in DRAIN_PERMISSIONS.iter().filter(|p| d.needs(p.when)) {
        let holder = d.holder(perm.on);
        let Some((_, (policies, boundary))) = parsed.iter().find(|(a, _)| *a == holder.arn) else {
            continue;
        };
        let res = resource(arns, d, perm.on);
        let decision = iam_policy::decide(policies, boundary.as_ref(), perm.action, &res);
        if let Some((problem, fix, certain)) = describe(&decision, perm, &res, holder, d) {
            if certain && perm.when != When::FanOut {
                out.problems.push((problem, fix));
            } else {
                out.warnings.push((problem, fix));
            }
        }
    }
    out
}

type Parsed = (Vec<Policy>, Option<Policy>);

fn parse_role(r: &RoleRead) -> Result<Parsed, String> {
    let policies = r
        .policies
        .iter()
        .map(|p| iam_policy::parse(&p.name, &p.text))
        .collect::<Result<Vec<_>, _>>()?;
    let boundary = r
        .boundary
        .as_ref()
        .map(|b| iam_policy::parse(&b.name, &b.text))
        .transpose()?;
    Ok((policies, boundary))
}

/// How `r` is named in findings.
fn who(r: &RoleRead, d: &DrainFacts) -> String {
    if r.arn == d.role.arn {
        format!("drain role {} (to {})", r.arn, d.destination)
    } else {
        format!(
            "destination role {} (the drain to {} assumes it)",
            r.arn, d.destination
        )
    }
}

/// A role that does not exist (certain) or could not be read (a warning).
fn read_problem(r: &RoleRead, d: &DrainFacts) -> Option<(String, String, bool)> {
    if r.missing {
        return Some((
            format!("{} does not exist", who(r, d)),
            if r.arn == d.role.arn {
                "deploy the stack from template.yaml (its DrainRole), or fix the stack's DrainRoleArn output".into()
            } else {
                "create the role in the destination's account (docs/operations.md, Destinations in another account), or fix DestinationRoleArns".into()
            },
            true,
        ));
    }
    let e = r.error.as_ref()?;
    Some((
        format!("{}: its permissions are not checked: {e}", who(r, d)),
        if r.arn == d.role.arn {
            "let the identity running doctor read IAM (iam:GetRole, iam:ListRolePolicies, iam:GetRolePolicy, iam:ListAttachedRolePolicies, iam:GetPolicy, iam:GetPolicyVersion)".into()
        } else {
            let dst = &d.destination;
            format!("run doctor with --role-arn {dst}=ARN of a role in the destination's account that may read IAM (iam:GetRole, iam:ListRolePolicies, iam:GetRolePolicy, iam:ListAttachedRolePolicies, iam:GetPolicy, iam:GetPolicyVersion), or check by hand that it allows the drain's DynamoDB calls on the table (docs/operations.md, Destinations in another account)")
        },
        false,
    ))
}

/// The finding for a decision that is not `Allowed`: (problem, fix, certain).
fn describe(
    decision: &Decision,
    perm: &Permission,
    res: &str,
    holder: &RoleRead,
    d: &DrainFacts,
) -> Option<(String, String, bool)> {
    let (action, name, who) = (perm.action, role_name(&holder.arn), who(holder, d));
    let as_template = match (perm.when, holder.arn == d.role.arn) {
        (When::FanOut, _) => "as template.yaml's DrainFanOut policy does (needed with MaxDrainConcurrency above 1: without it a tick drains alone)",
        (_, true) => "as template.yaml's DrainRole does",
        (_, false) => "as docs/operations.md's destination role does (Destinations in another account)",
    };
    let sid = |sid: &Option<String>| {
        sid.as_deref()
            .map(|s| format!(" statement {s}"))
            .unwrap_or_default()
    };
    Some(match decision {
        Decision::Allowed => return None,
        Decision::NotGranted => (
            format!("{who} lacks {action} on {res} (for {})", perm.call),
            format!("add {action} on {res} to role {name}'s policy, {as_template}"),
            true,
        ),
        Decision::Denied { policy, sid: s, in_boundary } => {
            let place = if *in_boundary { "permissions boundary" } else { "policy" };
            (
                format!("{who}: {action} on {res} is denied by {place} {policy}{}", sid(s)),
                format!("remove {action} on {res} from the Deny of {place} {policy}{} on role {name} (an explicit Deny wins over every Allow)", sid(s)),
                true,
            )
        }
        Decision::OutsideBoundary { boundary } => (
            format!("{who}: its permissions boundary {boundary} does not allow {action} on {res}"),
            format!("allow {action} on {res} in the permissions boundary {boundary} (it caps what role {name}'s policies grant), or remove the boundary from the role"),
            true,
        ),
        Decision::CannotTell { policy, sid: s, conditions, in_boundary } => {
            let place = if *in_boundary { "permissions boundary" } else { "policy" };
            (
                format!("{who}: whether it may {action} on {res} depends on a condition ({place} {policy}{}: {})", sid(s), conditions.join(", ")),
                format!("doctor does not evaluate conditions: check this one against the drain's calls (a Lambda function's, over TLS, from AWS), or ask IAM: aws iam simulate-principal-policy --policy-source-arn {} --action-names {action} --resource-arns {res}", holder.arn),
                false,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROLE: &str = "arn:aws:iam::123456789012:role/ferry-DrainRoleeuwest1-X";
    const DEST_ROLE: &str = "arn:aws:iam::222222222222:role/ferry-writer";

    fn arns() -> Arns {
        Arns {
            buffer: "arn:aws:sqs:us-east-1:123456789012:ferry-buffer-eu-west-1".into(),
            dlq: "arn:aws:sqs:us-east-1:123456789012:ferry-dlq-eu-west-1".into(),
            table: table_arn("aws", "eu-west-1", "123456789012", "orders"),
            conflict_table: table_arn("aws", "eu-west-1", "123456789012", "orders-ferry-conflicts"),
            function: function_arn("aws", "us-east-1", "123456789012", "ferry-drain-eu"),
        }
    }

    /// template.yaml's DrainRole policy and DrainFanOut, item mode, conflict log on.
    fn template_statements(a: &Arns) -> serde_json::Value {
        json!([
            {"Sid": "Buffer", "Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "sqs:ListQueueTags"], "Resource": a.buffer},
            {"Sid": "DeadLetter", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": a.dlq},
            {"Sid": "ConflictLog", "Effect": "Allow", "Action": ["dynamodb:BatchWriteItem", "dynamodb:PutItem"], "Resource": a.conflict_table},
            {"Sid": "DestinationTable", "Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"], "Resource": a.table},
            {"Sid": "Backlog", "Effect": "Allow", "Action": "sqs:GetQueueAttributes", "Resource": a.buffer},
            {"Sid": "StartWorkers", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": a.function},
        ])
    }

    fn doc(name: &str, statements: serde_json::Value) -> Document {
        Document {
            name: name.into(),
            text: json!({"Version": "2012-10-17", "Statement": statements}).to_string(),
        }
    }

    fn facts(statements: serde_json::Value) -> DrainFacts {
        DrainFacts {
            destination: "eu-west-1".into(),
            role: RoleRead {
                arn: ROLE.into(),
                policies: vec![doc("drain", statements)],
                ..RoleRead::default()
            },
            arns: Some(arns()),
            conflict_log: true,
            ..DrainFacts::default()
        }
    }

    fn without(statements: serde_json::Value, action: &str, sid: &str) -> serde_json::Value {
        let mut s = statements;
        for st in s.as_array_mut().into_iter().flatten() {
            if st["Sid"] == sid {
                let kept: Vec<_> = iam_policy::strings(&st["Action"])
                    .into_iter()
                    .filter(|a| a != action)
                    .collect();
                st["Action"] = json!(kept);
            }
        }
        s
    }

    #[test]
    fn the_templates_policy_passes() {
        let j = judge(&facts(template_statements(&arns())));
        assert_eq!(j, Judged::default());
    }

    #[test]
    fn each_missing_permission_names_role_action_resource_and_fix() {
        let a = arns();
        let j = judge(&facts(without(
            template_statements(&a),
            "dynamodb:PutItem",
            "DestinationTable",
        )));
        assert_eq!(j.problems.len(), 1, "{j:#?}");
        let (problem, fix) = &j.problems[0];
        assert!(
            problem.contains(ROLE)
                && problem.contains("lacks dynamodb:PutItem")
                && problem.contains(&a.table),
            "{problem}"
        );
        assert_eq!(fix, &format!("add dynamodb:PutItem on {} to role ferry-DrainRoleeuwest1-X's policy, as template.yaml's DrainRole does", a.table));
        let j = judge(&facts(without(
            template_statements(&a),
            "sqs:DeleteMessage",
            "Buffer",
        )));
        assert!(
            j.problems[0]
                .0
                .contains(&format!("lacks sqs:DeleteMessage on {}", a.buffer)),
            "{j:#?}"
        );
    }

    #[test]
    fn the_mode_and_the_log_decide_what_is_needed() {
        let a = arns();
        let mut f = facts(template_statements(&a));
        f.attribute_mode = true;
        let j = judge(&f);
        assert_eq!(j.problems.len(), 1, "{j:#?}");
        assert!(j.problems[0].0.contains("lacks dynamodb:UpdateItem"));
        f.attribute_mode = false;
        f.conflict_log = false;
        let no_log = without(
            template_statements(&a),
            "dynamodb:BatchWriteItem",
            "ConflictLog",
        );
        f.role.policies = vec![doc("drain", no_log)];
        assert_eq!(
            judge(&f),
            Judged::default(),
            "no log, no BatchWriteItem needed"
        );
    }

    #[test]
    fn denies_boundaries_and_conditions() {
        let a = arns();
        let mut f = facts(template_statements(&a));
        f.role.policies.push(doc("arn:aws:iam::123456789012:policy/no-dlq", json!([{"Sid": "NoDlq", "Effect": "Deny", "Action": "sqs:SendMessage", "Resource": a.dlq}])));
        f.role.boundary = Some(doc(
            "arn:aws:iam::123456789012:policy/boundary",
            json!([{"Effect": "Allow", "NotAction": "sqs:ListQueueTags", "Resource": "*"}]),
        ));
        let j = judge(&f);
        assert_eq!(j.problems.len(), 2, "{j:#?}");
        assert!(
            j.problems[0].0.contains("sqs:ListQueueTags")
                && j.problems[0].0.contains(
                    "permissions boundary arn:aws:iam::123456789012:policy/boundary does not allow"
                ),
            "{j:#?}"
        );
        assert!(
            j.problems[0].1.starts_with("allow sqs:ListQueueTags on"),
            "{j:#?}"
        );
        assert!(
            j.problems[1].0.contains(
                "denied by policy arn:aws:iam::123456789012:policy/no-dlq statement NoDlq"
            ),
            "{j:#?}"
        );
        assert!(
            j.problems[1].1.contains("remove sqs:SendMessage on")
                && j.problems[1].1.contains("explicit Deny"),
            "{j:#?}"
        );
        let mut f = facts(without(
            template_statements(&a),
            "sqs:ReceiveMessage",
            "Buffer",
        ));
        f.role.policies.push(doc("vpc", json!([{"Sid": "Vpc", "Effect": "Allow", "Action": "sqs:ReceiveMessage", "Resource": "*", "Condition": {"StringEquals": {"aws:SourceVpc": "vpc-1"}}}])));
        let j = judge(&f);
        assert!(j.problems.is_empty(), "{j:#?}");
        assert_eq!(j.warnings.len(), 1);
        assert!(
            j.warnings[0].0.contains(
                "depends on a condition (policy vpc statement Vpc: StringEquals aws:SourceVpc)"
            ),
            "{j:#?}"
        );
        assert!(j.warnings[0].1.contains("simulate-principal-policy"));
    }

    #[test]
    fn the_fan_out_is_a_warning() {
        let a = arns();
        let j = judge(&facts(without(
            template_statements(&a),
            "lambda:InvokeFunction",
            "StartWorkers",
        )));
        assert!(j.problems.is_empty(), "{j:#?}");
        assert!(
            j.warnings[0].0.contains("lacks lambda:InvokeFunction")
                && j.warnings[0].1.contains("MaxDrainConcurrency above 1"),
            "{j:#?}"
        );
    }

    #[test]
    fn a_role_that_is_missing_or_unreadable() {
        let mut f = facts(json!([]));
        f.role.missing = true;
        let j = judge(&f);
        assert_eq!(j.problems.len(), 1);
        assert!(
            j.problems[0].0.ends_with("does not exist") && j.problems[0].1.contains("DrainRole")
        );
        let mut f = facts(json!([]));
        f.role.error = Some("GetRole: identity (credentials or access): denied".into());
        let j = judge(&f);
        assert!(
            j.problems.is_empty() && j.warnings[0].1.contains("iam:GetRolePolicy"),
            "{j:#?}"
        );
        let mut f = facts(json!([]));
        f.arns = None;
        f.error = Some("GetCallerIdentity: …".into());
        assert!(judge(&f).warnings[0]
            .0
            .contains("not checked: GetCallerIdentity"));
    }

    #[test]
    fn cross_account_moves_the_table_to_the_destination_role() {
        let mut a = arns();
        a.table = table_arn("aws", "eu-west-1", "222222222222", "orders");
        a.conflict_table = table_arn("aws", "eu-west-1", "222222222222", "orders-ferry-conflicts");
        let own = json!([
            {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "sqs:ListQueueTags", "sqs:GetQueueAttributes"], "Resource": a.buffer},
            {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": a.dlq},
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": a.function},
        ]);
        let mut f = facts(own.clone());
        f.arns = Some(a.clone());
        f.destination_role = Some(RoleRead {
            arn: DEST_ROLE.into(),
            policies: vec![doc(
                "ferry-table",
                json!([{"Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DescribeTable", "dynamodb:ListTagsOfResource", "dynamodb:BatchWriteItem"], "Resource": [a.table, a.conflict_table]}]),
            )],
            ..RoleRead::default()
        });
        let j = judge(&f);
        assert_eq!(j.problems.len(), 1, "{j:#?}");
        assert!(
            j.problems[0]
                .0
                .contains(&format!("lacks sts:AssumeRole on {DEST_ROLE}")),
            "{j:#?}"
        );
        let mut with_assume = own.clone();
        if let Some(s) = with_assume.as_array_mut() {
            s.push(json!({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": DEST_ROLE}));
        }
        f.role.policies = vec![doc("drain", with_assume)];
        assert_eq!(judge(&f), Judged::default());
        if let Some(r) = f.destination_role.as_mut() {
            r.policies = vec![doc(
                "ferry-table",
                json!([{"Effect": "Allow", "Action": "dynamodb:DescribeTable", "Resource": a.table}]),
            )];
        }
        let j = judge(&f);
        assert!(
            j.problems.iter().any(|(p, fx)| p
                .starts_with(&format!("destination role {DEST_ROLE}"))
                && p.contains("lacks dynamodb:PutItem")
                && fx.contains("role ferry-writer's policy")),
            "{j:#?}"
        );
        if let Some(r) = f.destination_role.as_mut() {
            r.error = Some("in account 222222222222; these credentials are in 123456789012".into());
        }
        let j = judge(&f);
        assert!(j.problems.is_empty(), "{j:#?}");
        assert!(
            j.warnings[0].0.contains("its permissions are not checked")
                && j.warnings[0].1.contains("--role-arn eu-west-1=ARN"),
            "{j:#?}"
        );
    }

    #[test]
    fn arns_and_names() {
        assert_eq!(arn_account(ROLE), Some(("aws", "123456789012")));
        assert_eq!(
            arn_account("arn:aws-cn:sts::999:assumed-role/x/y"),
            Some(("aws-cn", "999"))
        );
        assert_eq!(arn_account("nope"), None);
        assert_eq!(role_name("arn:aws:iam::1:role/ops/ferry"), "ferry");
        assert_eq!(
            function_arn("aws", "us-east-1", "1", "f"),
            "arn:aws:lambda:us-east-1:1:function:f"
        );
        let sqs = DRAIN_PERMISSIONS
            .iter()
            .filter(|p| p.action.starts_with("sqs:"))
            .count();
        assert_eq!(sqs, 6, "one list of what the drain calls");
    }
}
