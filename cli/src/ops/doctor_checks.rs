//! `ferry doctor`'s judgements of a region's queues and of its stack's alarms (pure): a buffer
//! or DLQ must take Ferry's largest message and keep it 14 days, a deployed stack's queue policy
//! must let only Ferry's roles send, and every alarm must notify someone.

use super::iam_policy::strings;
use ferry_aws::inspect::QueueSettings;
use serde::Serialize;
use serde_json::Value;

/// The largest message the enqueue packs (SQS's limit).
pub const MAX_MESSAGE_BYTES: u64 = ferry_core::buffer::SQS_MAX_MESSAGE_BYTES as u64;
/// SQS's longest retention: the tombstone lifetime assumes a record may wait this long.
pub const RETENTION_S: u64 = 14 * 24 * 3600;

/// One queue of a region (a buffer or its DLQ) as read.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct QueueFacts {
    /// `buffer` or `dlq`.
    pub kind: String,
    pub destination: String,
    pub url: String,
    pub settings: QueueSettings,
    /// The drain role the stack's outputs name for this destination: the policy is judged
    /// only for a deployed stack's queues (the sandbox's have none).
    pub drain_role: Option<String>,
}

/// A stack's alarms in a region, as read.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct AlarmFacts {
    pub stack: String,
    pub error: Option<String>,
    pub alarms: Vec<Alarm>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Alarm {
    pub name: String,
    pub actions: Vec<String>,
    pub actions_enabled: bool,
}

/// (problem, fix) pairs of one queue.
pub fn queue_problems(q: &QueueFacts) -> Vec<(String, String)> {
    let what = format!("{} to {} ({})", q.kind, q.destination, q.url);
    let mut out = Vec::new();
    let s = &q.settings;
    if s.max_message_size.is_some_and(|n| n < MAX_MESSAGE_BYTES) {
        out.push((
            format!("{what}: MaximumMessageSize is {} bytes", s.max_message_size.unwrap_or(0)),
            format!("set MaximumMessageSize to {MAX_MESSAGE_BYTES} (the enqueue packs records up to SQS's 1 MiB; smaller sends fail)"),
        ));
    }
    if s.retention_s.is_some_and(|n| n < RETENTION_S) {
        out.push((
            format!("{what}: MessageRetentionPeriod is {} s", s.retention_s.unwrap_or(0)),
            format!("set MessageRetentionPeriod to {RETENTION_S} (14 days: a record must outlive an outage, and a dead letter keeps its first enqueue time)"),
        ));
    }
    if let Some(role) = &q.drain_role {
        out.extend(
            policy_problems(s.policy.as_deref(), role)
                .into_iter()
                .map(|(p, f)| (format!("{what}: {p}"), f)),
        );
    }
    out
}

const POLICY_FIX: &str = "deploy the template's queue policy: DenySendToOthers denies sqs:SendMessage to every principal but the enqueue, drain and operator roles";

/// What is wrong with a deployed queue's policy: none, one that lets anyone in, none that
/// keeps others from sending, or one that keeps out the drain itself.
pub fn policy_problems(policy: Option<&str>, drain_role: &str) -> Vec<(String, String)> {
    let Some(text) = policy else {
        return vec![(
            "no access policy: any identity IAM allows can send records the drain will apply"
                .into(),
            POLICY_FIX.into(),
        )];
    };
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return vec![("the access policy is not JSON".into(), POLICY_FIX.into())];
    };
    let statements = match &doc["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    let mut guarded = false;
    for s in &statements {
        let sid = s["Sid"].as_str().unwrap_or("(no Sid)");
        let anyone = strings(&s["Principal"]).contains(&"*".to_string())
            || strings(&s["Principal"]["AWS"]).contains(&"*".to_string());
        let effect = s["Effect"].as_str().unwrap_or_default();
        if effect == "Allow" && anyone && s.get("Condition").is_none() {
            out.push((
                format!("policy statement {sid} allows anyone"),
                "remove the statement, or limit its Principal to Ferry's roles".into(),
            ));
        }
        let actions = strings(&s["Action"]);
        let sends = actions
            .iter()
            .any(|a| a == "sqs:SendMessage" || a == "sqs:*");
        let exempt = strings(&s["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]);
        if effect == "Deny" && anyone && sends && !exempt.is_empty() {
            guarded = true;
            if !exempt.iter().any(|a| a == drain_role) {
                out.push((
                    format!(
                        "policy statement {sid} denies SendMessage to the drain role {drain_role}"
                    ),
                    format!("add {drain_role} to the statement's aws:PrincipalArn"),
                ));
            }
        }
    }
    if !guarded {
        out.push((
            "the access policy does not keep identities other than Ferry's roles from sending"
                .into(),
            POLICY_FIX.into(),
        ));
    }
    out
}

/// (problem, fix) pairs of a stack's alarms in one region.
pub fn alarm_problems(a: &AlarmFacts) -> Vec<(String, String)> {
    if let Some(e) = &a.error {
        return vec![(
            format!("the alarms of stack {} cannot be read: {e}", a.stack),
            "allow cloudwatch:DescribeAlarms to this identity, or check the region".into(),
        )];
    }
    if a.alarms.is_empty() {
        return vec![(
            format!("stack {} has no alarms (none named {}-…)", a.stack, a.stack),
            "deploy the stack from template.yaml, which creates them".into(),
        )];
    }
    a.alarms
        .iter()
        .filter(|x| x.actions.is_empty() || !x.actions_enabled)
        .map(|x| {
            (
                format!("alarm {} notifies nobody", x.name),
                "give it an action: set the stack's AlarmTopicArn (or subscribe to its <stack>-alarms topic) and enable its actions".into(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::123456789012:role/ferry-drain-eu";

    fn template_policy(exempt: &[&str]) -> String {
        serde_json::json!({"Statement": [
            {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "sqs:*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            {"Sid": "DenySendToOthers", "Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage",
             "Condition": {"ArnNotEquals": {"aws:PrincipalArn": exempt}}},
        ]})
        .to_string()
    }

    fn queue(settings: QueueSettings) -> QueueFacts {
        QueueFacts {
            kind: "buffer".into(),
            destination: "eu-west-1".into(),
            url: "u".into(),
            settings,
            drain_role: Some(ROLE.into()),
        }
    }

    #[test]
    fn a_template_queue_is_fine() {
        let q = queue(QueueSettings {
            max_message_size: Some(MAX_MESSAGE_BYTES),
            retention_s: Some(RETENTION_S),
            policy: Some(template_policy(&["arn:enqueue", ROLE])),
        });
        assert_eq!(queue_problems(&q), vec![]);
        let sandbox = QueueFacts {
            drain_role: None,
            settings: QueueSettings {
                policy: None,
                ..q.settings.clone()
            },
            ..q
        };
        assert_eq!(
            queue_problems(&sandbox),
            vec![],
            "no policy judged without a stack"
        );
    }

    #[test]
    fn each_queue_misconfiguration_names_its_fix() {
        let q = queue(QueueSettings {
            max_message_size: Some(262_144),
            retention_s: Some(345_600),
            policy: None,
        });
        let p = queue_problems(&q);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].0.contains("MaximumMessageSize is 262144") && p[0].1.contains("1048576"));
        assert!(p[1].0.contains("MessageRetentionPeriod is 345600") && p[1].1.contains("1209600"));
        assert!(p[2].0.contains("no access policy") && p[2].1.contains("DenySendToOthers"));
        let open = serde_json::json!({"Statement": {"Sid": "Open", "Effect": "Allow",
            "Principal": {"AWS": "*"}, "Action": "sqs:*"}})
        .to_string();
        let p = policy_problems(Some(&open), ROLE);
        assert!(p[0].0.contains("statement Open allows anyone"), "{p:#?}");
        assert!(
            p[1].0
                .contains("does not keep identities other than Ferry's"),
            "{p:#?}"
        );
        let p = policy_problems(Some(&template_policy(&["arn:enqueue"])), ROLE);
        assert_eq!(p.len(), 1);
        assert!(p[0].0.contains("denies SendMessage to the drain role") && p[0].1.contains(ROLE));
    }

    #[test]
    fn alarms_must_notify_someone() {
        let alarm = |name: &str, actions: &[&str], enabled| Alarm {
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            actions_enabled: enabled,
        };
        let facts = AlarmFacts {
            stack: "ferry".into(),
            error: None,
            alarms: vec![
                alarm("ferry-a", &["arn:topic"], true),
                alarm("ferry-b", &[], true),
                alarm("ferry-c", &["arn:topic"], false),
            ],
        };
        let p = alarm_problems(&facts);
        assert_eq!(p.len(), 2);
        assert!(
            p[0].0.contains("alarm ferry-b notifies nobody") && p[0].1.contains("AlarmTopicArn")
        );
        let none = AlarmFacts {
            stack: "ferry".into(),
            ..AlarmFacts::default()
        };
        assert!(alarm_problems(&none)[0].0.contains("has no alarms"));
    }
}
