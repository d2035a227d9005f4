//! Judging IAM identity policies without AWS (pure): may these policies, capped by this
//! permissions boundary, call `action` on `resource`? moto has no `iam:SimulatePrincipalPolicy`,
//! and the real simulator needs rights an operator may lack, so `ferry doctor` reads a role's
//! policy documents and evaluates them here. Covered: Allow and Deny, `Action`/`NotAction`,
//! `Resource`/`NotResource` with IAM's `*` and `?` wildcards (actions case-insensitive), an
//! explicit Deny winning, a boundary that must allow too. A statement with a `Condition` is
//! never guessed: it makes the answer [`Decision::CannotTell`]. Not seen here: SCPs, session
//! policies, and resource policies (docs/operations.md).

use serde_json::Value;

/// One policy document, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The inline policy's name, or the managed policy's ARN.
    pub name: String,
    pub statements: Vec<Statement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub allow: bool,
    /// The patterns of `Action`, or of `NotAction` when `not_action`.
    pub actions: Vec<String>,
    pub not_action: bool,
    pub resources: Vec<String>,
    pub not_resource: bool,
    /// `Operator key` of each condition (`StringEquals aws:SourceVpc`); empty: unconditional.
    pub conditions: Vec<String>,
}

/// What a set of policies says about one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No statement allows it (IAM's implicit deny).
    NotAllowed,
    /// A statement denies it, unconditionally.
    Denied {
        policy: String,
        sid: Option<String>,
    },
    /// It depends on a statement's condition.
    Conditional {
        policy: String,
        sid: Option<String>,
        conditions: Vec<String>,
    },
}

/// A role's answer: its policies and its permissions boundary together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// None of the role's policies allows it.
    NotGranted,
    /// An explicit Deny (in a policy, or in the boundary when `in_boundary`).
    Denied {
        policy: String,
        sid: Option<String>,
        in_boundary: bool,
    },
    /// The policies allow it; the boundary does not.
    OutsideBoundary {
        boundary: String,
    },
    /// A condition decides (in a policy, or in the boundary when `in_boundary`).
    CannotTell {
        policy: String,
        sid: Option<String>,
        conditions: Vec<String>,
        in_boundary: bool,
    },
}

/// A string or an array of strings, as IAM writes both.
pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Parses a policy document's JSON text.
pub fn parse(name: &str, text: &str) -> Result<Policy, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("policy {name} is not JSON: {e}"))?;
    let statements = match &doc["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => return Err(format!("policy {name} has no Statement")),
    };
    let statements = statements
        .iter()
        .map(|s| statement(name, s))
        .collect::<Result<_, _>>()?;
    Ok(Policy {
        name: name.to_string(),
        statements,
    })
}

fn statement(policy: &str, s: &Value) -> Result<Statement, String> {
    let sid = s["Sid"].as_str().map(str::to_string);
    let allow = match s["Effect"].as_str() {
        Some("Allow") => true,
        Some("Deny") => false,
        other => {
            return Err(format!(
                "policy {policy} statement {}: Effect {other:?}",
                sid.as_deref().unwrap_or("(no Sid)")
            ))
        }
    };
    let not_action = s.get("Action").is_none() && s.get("NotAction").is_some();
    let not_resource = s.get("Resource").is_none() && s.get("NotResource").is_some();
    // `NotAction` or, without its `Not`, `Action` (the same for resources).
    let pick = |not_key: &str, not: bool| strings(&s[if not { not_key } else { &not_key[3..] }]);
    let conditions = match &s["Condition"] {
        Value::Object(ops) => ops
            .iter()
            .flat_map(|(op, keys)| match keys {
                Value::Object(k) => k.keys().map(|k| format!("{op} {k}")).collect(),
                _ => vec![op.clone()],
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Statement {
        sid,
        allow,
        actions: pick("NotAction", not_action),
        not_action,
        resources: pick("NotResource", not_resource),
        not_resource,
        conditions,
    })
}

/// IAM's wildcard match: `*` any run of characters, `?` any one.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Statement {
    /// Whether the statement speaks of `action` on `resource` (conditions aside).
    pub fn covers(&self, action: &str, resource: &str) -> bool {
        let action = action.to_ascii_lowercase();
        let acts = self
            .actions
            .iter()
            .any(|a| wildcard(&a.to_ascii_lowercase(), &action));
        let res = self.resources.iter().any(|r| wildcard(r, resource));
        acts != self.not_action && res != self.not_resource
    }
}

/// What `policies` together say about `action` on `resource`: an unconditional Deny wins; a
/// conditional one makes any Allow uncertain; then an unconditional Allow, then a conditional.
pub fn evaluate(policies: &[Policy], action: &str, resource: &str) -> Verdict {
    let matching = policies.iter().flat_map(|p| {
        p.statements
            .iter()
            .filter(|s| s.covers(action, resource))
            .map(move |s| (p, s))
    });
    let (mut deny_if, mut allow, mut allow_if) = (None, false, None);
    for (p, s) in matching {
        let conditional = || Verdict::Conditional {
            policy: p.name.clone(),
            sid: s.sid.clone(),
            conditions: s.conditions.clone(),
        };
        match (s.allow, s.conditions.is_empty()) {
            (false, true) => {
                return Verdict::Denied {
                    policy: p.name.clone(),
                    sid: s.sid.clone(),
                }
            }
            (false, false) => deny_if = deny_if.or_else(|| Some(conditional())),
            (true, true) => allow = true,
            (true, false) => allow_if = allow_if.or_else(|| Some(conditional())),
        }
    }
    match (deny_if, allow, allow_if) {
        (_, false, None) => Verdict::NotAllowed,
        (Some(d), _, _) => d,
        (None, true, _) => Verdict::Allowed,
        (None, false, Some(a)) => a,
    }
}

/// The role's answer: its `policies`, capped by its `boundary` if it has one. Definite answers
/// come before uncertain ones: a Deny, then what is not granted, then a condition.
pub fn decide(
    policies: &[Policy],
    boundary: Option<&Policy>,
    action: &str,
    resource: &str,
) -> Decision {
    let own = evaluate(policies, action, resource);
    let capped = boundary.map(|b| evaluate(std::slice::from_ref(b), action, resource));
    let denied = |v: &Verdict, in_boundary| match v {
        Verdict::Denied { policy, sid } => Some(Decision::Denied {
            policy: policy.clone(),
            sid: sid.clone(),
            in_boundary,
        }),
        _ => None,
    };
    let unsure = |v: &Verdict, in_boundary| match v {
        Verdict::Conditional {
            policy,
            sid,
            conditions,
        } => Some(Decision::CannotTell {
            policy: policy.clone(),
            sid: sid.clone(),
            conditions: conditions.clone(),
            in_boundary,
        }),
        _ => None,
    };
    let capped_ref = capped.as_ref();
    denied(&own, false)
        .or_else(|| capped_ref.and_then(|c| denied(c, true)))
        .or_else(|| (own == Verdict::NotAllowed).then_some(Decision::NotGranted))
        .or_else(|| {
            let b = boundary.map(|b| b.name.clone())?;
            (capped_ref == Some(&Verdict::NotAllowed))
                .then_some(Decision::OutsideBoundary { boundary: b })
        })
        .or_else(|| unsure(&own, false))
        .or_else(|| capped_ref.and_then(|c| unsure(c, true)))
        .unwrap_or(Decision::Allowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TABLE: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders";
    const QUEUE: &str = "arn:aws:sqs:us-east-1:123456789012:ferry-buffer-eu-west-1";

    fn policy(name: &str, statements: Value) -> Policy {
        parse(
            name,
            &json!({"Version": "2012-10-17", "Statement": statements}).to_string(),
        )
        .expect("a valid policy")
    }

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(wildcard("*", ""));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("sqs:*", "sqs:SendMessage"));
        assert!(wildcard("sqs:Send*", "sqs:SendMessage"));
        assert!(wildcard("sqs:*Message", "sqs:SendMessage"));
        assert!(wildcard("sqs:?endMessage", "sqs:SendMessage"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(wildcard("a*b*c", "abcbc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
        assert!(!wildcard("sqs:?", "sqs:"));
        assert!(!wildcard("sqs:Send", "sqs:SendMessage"));
        assert!(wildcard("arn:aws:dynamodb:*:123456789012:table/*", TABLE));
        assert!(
            !wildcard("arn:aws:dynamodb:*:*:table/Orders", TABLE),
            "resources keep case"
        );
        assert!(wildcard("arn:aws:dynamodb:eu-west-?:*:table/orders", TABLE));
    }

    #[test]
    fn actions_ignore_case_and_resources_do_not() {
        let p = policy(
            "drain",
            json!([{"Effect": "Allow", "Action": "DynamoDB:putitem", "Resource": TABLE}]),
        );
        assert_eq!(
            evaluate(std::slice::from_ref(&p), "dynamodb:PutItem", TABLE),
            Verdict::Allowed
        );
        let upper = TABLE.replace("orders", "Orders");
        assert_eq!(
            evaluate(&[p], "dynamodb:PutItem", &upper),
            Verdict::NotAllowed
        );
    }

    #[test]
    fn nothing_allowed_is_not_allowed() {
        assert_eq!(evaluate(&[], "sqs:SendMessage", QUEUE), Verdict::NotAllowed);
        let p = policy(
            "other",
            json!({"Effect": "Allow", "Action": ["sqs:ReceiveMessage"], "Resource": QUEUE}),
        );
        assert_eq!(
            evaluate(&[p], "sqs:SendMessage", QUEUE),
            Verdict::NotAllowed
        );
    }

    #[test]
    fn an_explicit_deny_wins_over_any_allow() {
        let allow = policy(
            "drain",
            json!([{"Effect": "Allow", "Action": "*", "Resource": "*"}]),
        );
        let deny = policy(
            "arn:aws:iam::123456789012:policy/no-writes",
            json!([{"Sid": "NoPut", "Effect": "Deny", "Action": "dynamodb:Put*", "Resource": "*"}]),
        );
        assert_eq!(
            evaluate(&[allow.clone(), deny.clone()], "dynamodb:PutItem", TABLE),
            Verdict::Denied {
                policy: "arn:aws:iam::123456789012:policy/no-writes".into(),
                sid: Some("NoPut".into())
            }
        );
        assert_eq!(
            evaluate(&[deny, allow], "dynamodb:GetItem", TABLE),
            Verdict::Allowed
        );
    }

    #[test]
    fn not_action_and_not_resource_invert_the_match() {
        let p = policy(
            "p",
            json!([
                {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
                {"Sid": "OnlyThisTable", "Effect": "Deny", "Action": "dynamodb:*", "NotResource": TABLE},
            ]),
        );
        let ps = [p];
        assert_eq!(evaluate(&ps, "dynamodb:PutItem", TABLE), Verdict::Allowed);
        assert_eq!(evaluate(&ps, "iam:GetRole", "*"), Verdict::NotAllowed);
        let other = TABLE.replace("orders", "other");
        assert!(matches!(
            evaluate(&ps, "dynamodb:PutItem", &other),
            Verdict::Denied { sid: Some(s), .. } if s == "OnlyThisTable"
        ));
        assert_eq!(evaluate(&ps, "sqs:SendMessage", QUEUE), Verdict::Allowed);
    }

    #[test]
    fn a_condition_is_never_guessed() {
        let allow_if = policy(
            "vpc-only",
            json!([{"Sid": "FromVpc", "Effect": "Allow", "Action": "sqs:*", "Resource": QUEUE,
                    "Condition": {"StringEquals": {"aws:SourceVpc": "vpc-1"}}}]),
        );
        let v = evaluate(std::slice::from_ref(&allow_if), "sqs:SendMessage", QUEUE);
        assert_eq!(
            v,
            Verdict::Conditional {
                policy: "vpc-only".into(),
                sid: Some("FromVpc".into()),
                conditions: vec!["StringEquals aws:SourceVpc".into()]
            }
        );
        let allow = policy(
            "drain",
            json!([{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]),
        );
        assert_eq!(
            evaluate(&[allow_if, allow.clone()], "sqs:SendMessage", QUEUE),
            Verdict::Allowed,
            "an unconditional Allow settles it"
        );
        let deny_if = policy(
            "tls",
            json!([{"Effect": "Deny", "Action": "sqs:*", "Resource": "*",
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]),
        );
        assert!(matches!(
            evaluate(&[allow, deny_if.clone()], "sqs:SendMessage", QUEUE),
            Verdict::Conditional { conditions, .. } if conditions == ["Bool aws:SecureTransport"]
        ));
        assert_eq!(
            evaluate(&[deny_if], "sqs:SendMessage", QUEUE),
            Verdict::NotAllowed,
            "a conditional Deny with no Allow: not allowed either way"
        );
    }

    #[test]
    fn a_boundary_must_allow_too() {
        let own = [policy(
            "drain",
            json!([{"Effect": "Allow", "Action": ["sqs:*", "dynamodb:*"], "Resource": "*"}]),
        )];
        let boundary = policy(
            "arn:aws:iam::123456789012:policy/boundary",
            json!([{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]),
        );
        assert_eq!(
            decide(&own, Some(&boundary), "sqs:DeleteMessage", QUEUE),
            Decision::Allowed
        );
        assert_eq!(
            decide(&own, Some(&boundary), "dynamodb:PutItem", TABLE),
            Decision::OutsideBoundary {
                boundary: "arn:aws:iam::123456789012:policy/boundary".into()
            }
        );
        assert_eq!(
            decide(&own, None, "dynamodb:PutItem", TABLE),
            Decision::Allowed
        );
        assert_eq!(
            decide(&[], Some(&boundary), "sqs:DeleteMessage", QUEUE),
            Decision::NotGranted,
            "a boundary grants nothing by itself"
        );
        let deny = policy(
            "b",
            json!([{"Sid": "X", "Effect": "Deny", "Action": "sqs:DeleteMessage", "Resource": "*"}, {"Effect": "Allow", "Action": "*", "Resource": "*"}]),
        );
        assert_eq!(
            decide(&own, Some(&deny), "sqs:DeleteMessage", QUEUE),
            Decision::Denied {
                policy: "b".into(),
                sid: Some("X".into()),
                in_boundary: true
            }
        );
        let cond = policy(
            "c",
            json!([{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringLike": {"aws:RequestTag/team": "x"}}}]),
        );
        assert!(matches!(
            decide(&own, Some(&cond), "sqs:DeleteMessage", QUEUE),
            Decision::CannotTell {
                in_boundary: true,
                ..
            }
        ));
        assert_eq!(
            decide(&[], Some(&cond), "sqs:DeleteMessage", QUEUE),
            Decision::NotGranted,
            "what is certainly missing comes before what is uncertain"
        );
    }

    #[test]
    fn documents_parse_in_every_shape_iam_accepts() {
        let one =
            r#"{"Statement": {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}}"#;
        let p = parse("one", one).expect("a lone statement object");
        assert_eq!(p.statements.len(), 1);
        assert_eq!(p.statements[0].sid, None);
        assert!(parse("bad", "not json")
            .unwrap_err()
            .contains("policy bad is not JSON"));
        assert!(parse("none", "{}").unwrap_err().contains("no Statement"));
        let e = parse(
            "odd",
            r#"{"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}"#,
        );
        assert!(e.unwrap_err().contains("Effect"));
    }
}
