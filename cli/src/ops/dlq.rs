//! `ferry dlq list|show|redrive --from A --to B`: what sits in a pair's dead-letter queue and
//! why (the `ferry-reason` the drain attached), and moving it back to the buffer once the cause
//! is fixed. Reading a DLQ receives its messages (with a visibility timeout, so each is seen
//! once) and releases them at the end. Redrive sends each selected message to the buffer first
//! and deletes it from the DLQ only after SQS took it: an interruption leaves a duplicate
//! (harmless, applying is idempotent), never a loss.

use super::target::{Target, TargetArgs};
use super::{finish, OpsError, EXIT_FOUND, EXIT_OK};
use clap::{Args, Subcommand};
use ferry_aws::buffer::{REASON_ATTRIBUTE, RECORDS_ATTRIBUTE};
use ferry_aws::{Buffer, ReceivedWithAttributes, FIRST_SENT_ATTRIBUTE};
use ferry_core::buffer::{unpack, BufferMessage};
use ferry_core::item::describe_key;
use serde::Serialize;
use std::collections::BTreeSet;
use std::process::ExitCode;

#[derive(Args, Clone, Debug)]
pub struct PairArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The buffer's source region (where the queues live).
    #[arg(long)]
    pub from: String,
    /// The buffer's destination region.
    #[arg(long)]
    pub to: String,
    /// Print JSON instead of the human report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Clone, Debug)]
pub enum DlqCommand {
    /// Every message in the DLQ: id, age, records, keys, the reason it failed.
    List(PairArgs),
    /// The records of the given messages in full (keys, versions, images).
    Show {
        #[command(flatten)]
        pair: PairArgs,
        /// Message ids (from `list`).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Moves messages back to their buffer: `--all`, or the given ids.
    Redrive {
        #[command(flatten)]
        pair: PairArgs,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        ids: Vec<String>,
    },
}

/// One DLQ message as the operator sees it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DlqEntry {
    pub message_id: String,
    /// When it reached the DLQ (the drain dead-letters a record as a new message).
    pub sent_at_ms: u64,
    pub age_s: u64,
    pub records: usize,
    pub reason: Option<String>,
    /// Whether the body is a Ferry buffer message this version reads.
    pub readable: bool,
    /// Why not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// Each record: `key @ version` (tombstones marked).
    pub keys: Vec<String>,
    /// With `show`: each record's image as JSON.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<serde_json::Value>,
}

/// What a DLQ message holds (pure: the body and attributes as received).
pub fn describe(m: &ReceivedWithAttributes, now_ms: u64, with_images: bool) -> DlqEntry {
    let body = &m.message.body;
    let (readable, unreadable, keys, images, count) = match unpack(body) {
        Ok(records) => (
            true,
            None,
            records
                .iter()
                .map(|r| {
                    format!(
                        "{} @ {}{}",
                        describe_key(&r.key),
                        r.version,
                        if r.tombstone { " (tombstone)" } else { "" }
                    )
                })
                .collect(),
            if with_images {
                records
                    .iter()
                    .map(|r| serde_json::to_value(&r.image).unwrap_or_default())
                    .collect()
            } else {
                Vec::new()
            },
            records.len(),
        ),
        Err(e) => (false, Some(e.to_string()), Vec::new(), Vec::new(), 0),
    };
    DlqEntry {
        message_id: m.message.message_id.clone(),
        sent_at_ms: m.message.sent_at_ms,
        age_s: now_ms.saturating_sub(m.message.sent_at_ms) / 1000,
        records: m
            .number(RECORDS_ATTRIBUTE)
            .map(|n| n as usize)
            .unwrap_or(count),
        reason: m.attributes.get(REASON_ATTRIBUTE).cloned(),
        readable,
        unreadable,
        keys,
        images,
    }
}

/// Which received messages a command acts on, and the ids asked for that were not found.
pub fn select<'a>(
    received: &'a [ReceivedWithAttributes],
    all: bool,
    ids: &[String],
) -> (Vec<&'a ReceivedWithAttributes>, Vec<String>) {
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let chosen: Vec<&ReceivedWithAttributes> = received
        .iter()
        .filter(|m| all || wanted.contains(m.message.message_id.as_str()))
        .collect();
    let found: BTreeSet<&str> = chosen
        .iter()
        .map(|m| m.message.message_id.as_str())
        .collect();
    let missing = wanted
        .into_iter()
        .filter(|id| !found.contains(id))
        .map(str::to_string)
        .collect();
    (chosen, missing)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DlqReport {
    pub from: String,
    pub to: String,
    pub dlq: String,
    pub messages: Vec<DlqEntry>,
    /// Redrive: messages moved back to the buffer.
    pub redriven: usize,
    /// Redrive: sent to the buffer but not deleted from the DLQ (they will be there twice).
    pub not_deleted: usize,
    /// Ids asked for and not in the DLQ.
    pub not_found: Vec<String>,
}

/// Receives every message of the DLQ once (each hidden for `visibility_s`).
async fn receive_all(
    dlq: &Buffer,
    visibility_s: i32,
) -> Result<Vec<ReceivedWithAttributes>, OpsError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    loop {
        let got = dlq
            .receive_with_attributes(10, 1, Some(visibility_s), &["All"])
            .await?;
        if got.is_empty() {
            return Ok(out);
        }
        for m in got {
            if seen.insert(m.message.message_id.clone()) {
                out.push(m);
            }
        }
    }
}

/// Makes messages visible again at once.
async fn release(dlq: &Buffer, messages: &[&ReceivedWithAttributes]) {
    for m in messages {
        if let Err(e) = dlq.release(&m.message.receipt_handle, 0).await {
            tracing::warn!(error = %e, "releasing a DLQ message failed: it reappears after its visibility timeout");
        }
    }
}

pub enum Action {
    List,
    Show(Vec<String>),
    Redrive { all: bool, ids: Vec<String> },
}

pub async fn run(
    target: &Target,
    from: &str,
    to: &str,
    action: Action,
) -> Result<DlqReport, OpsError> {
    target.regions(&[from.to_string(), to.to_string()])?;
    let (buffer, dlq) = target.queues(from, to).await?;
    let received = receive_all(&dlq, 120).await?;
    let now = ferry_core::clock::system_now_ms();
    let mut report = DlqReport {
        from: from.into(),
        to: to.into(),
        dlq: dlq.queue_url.clone(),
        ..Default::default()
    };
    let (chosen, with_images, redrive) = match &action {
        Action::List => (select(&received, true, &[]), false, false),
        Action::Show(ids) => (select(&received, false, ids), true, false),
        Action::Redrive { all, ids } => (select(&received, *all, ids), false, true),
    };
    let (chosen, not_found) = chosen;
    report.not_found = not_found;
    let mut keep: Vec<&ReceivedWithAttributes> = received
        .iter()
        .filter(|m| {
            !chosen
                .iter()
                .any(|c| c.message.message_id == m.message.message_id)
        })
        .collect();
    let mut failure = None;
    for m in &chosen {
        let entry = describe(m, now, with_images);
        if redrive && failure.is_none() {
            // Send first, delete after: an interruption between the two duplicates, never loses.
            let message = BufferMessage {
                body: m.message.body.clone(),
                records: entry.records.max(1),
            };
            // The records keep their first-sent time: a redrive does not make them young.
            let first_sent = [(FIRST_SENT_ATTRIBUTE, m.first_sent_ms())];
            match buffer.send_batch_with(&vec![message], &first_sent, 0).await {
                Ok(failed) if failed.is_empty() => {
                    match dlq.delete(&[m.message.receipt_handle.as_str()]).await {
                        Ok(left) if left.is_empty() => report.redriven += 1,
                        _ => report.not_deleted += 1,
                    }
                }
                Ok(_) => {
                    failure = Some(OpsError::Data(format!(
                        "SQS refused message {} on the buffer: left in the DLQ",
                        m.message.message_id
                    )));
                    keep.push(m);
                }
                Err(e) => {
                    failure = Some(e.into());
                    keep.push(m);
                }
            }
        } else {
            keep.push(m);
        }
        report.messages.push(entry);
    }
    release(&dlq, &keep).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

pub async fn main(command: DlqCommand) -> ExitCode {
    let (pair, action, verb) = match command {
        DlqCommand::List(pair) => (pair, Action::List, "dlq list"),
        DlqCommand::Show { pair, ids } => (pair, Action::Show(ids), "dlq show"),
        DlqCommand::Redrive { pair, all, ids } => {
            if !all && ids.is_empty() {
                eprintln!("ferry dlq redrive: pass --all or message ids");
                return ExitCode::from(super::EXIT_ERROR);
            }
            (pair, Action::Redrive { all, ids }, "dlq redrive")
        }
    };
    let json = pair.json;
    let result = async {
        let target = Target::connect(&pair.target).await?;
        run(&target, &pair.from, &pair.to, action).await
    }
    .await;
    let redrive = verb == "dlq redrive";
    finish(
        verb,
        json,
        result,
        |r| render(r, redrive),
        |r| {
            if !r.not_found.is_empty() || r.not_deleted > 0 {
                EXIT_FOUND
            } else {
                EXIT_OK
            }
        },
    )
}

pub fn render(r: &DlqReport, redrive: bool) -> String {
    let mut out = if redrive {
        format!(
            "dlq {} → {}: {} message(s) moved back to the buffer\n",
            r.from, r.to, r.redriven
        )
    } else {
        format!(
            "dlq {} → {}: {} message(s)\n",
            r.from,
            r.to,
            r.messages.len()
        )
    };
    for m in &r.messages {
        out += &format!(
            "  {}  age {} s  {} record(s){}\n    reason: {}\n",
            m.message_id,
            m.age_s,
            m.records,
            if m.readable { "" } else { "  UNREADABLE" },
            m.reason.as_deref().unwrap_or("(none attached)")
        );
        if let Some(u) = &m.unreadable {
            out += &format!("    unreadable: {u}\n");
        }
        for k in m.keys.iter().take(10) {
            out += &format!("    {k}\n");
        }
        if m.keys.len() > 10 {
            out += &format!("    … {} more\n", m.keys.len() - 10);
        }
        for i in &m.images {
            out += &format!("    image: {i}\n");
        }
    }
    for id in &r.not_found {
        out += &format!("  not found: {id}\n");
    }
    if r.not_deleted > 0 {
        out += &format!(
            "  {} message(s) reached the buffer but stay in the DLQ too (harmless duplicates)\n",
            r.not_deleted
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_aws::Received;
    use ferry_core::{AttributeValue, ChangeRecord, Item, Version};

    fn received(id: &str, body: &str, reason: Option<&str>) -> ReceivedWithAttributes {
        ReceivedWithAttributes {
            message: Received {
                message_id: id.into(),
                receipt_handle: format!("r-{id}"),
                body: body.into(),
                receive_count: 1,
                sent_at_ms: 1_000,
            },
            attributes: reason
                .map(|r| [(REASON_ATTRIBUTE.to_string(), r.to_string())].into())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn describes_readable_and_unreadable_messages() {
        let key: Item = [("pk".to_string(), AttributeValue::S("a".into()))].into();
        let mut image = key.clone();
        Version::new(7, "us-east-1").stamp_into(&mut image, &Default::default());
        let record = ChangeRecord {
            key,
            image,
            tombstone: false,
            version: Version::new(7, "us-east-1"),
            source_region: "us-east-1".into(),
            written_at_ms: 7,
        };
        let body = ferry_core::buffer::pack(&[record]).unwrap()[0][0]
            .body
            .clone();
        let e = describe(
            &received("m1", &body, Some("pending 20 times")),
            61_000,
            true,
        );
        assert!(e.readable);
        assert_eq!(e.records, 1);
        assert_eq!(e.age_s, 60);
        assert_eq!(e.keys, vec!["pk=S:a @ 7@us-east-1".to_string()]);
        assert_eq!(e.reason.as_deref(), Some("pending 20 times"));
        assert_eq!(e.images.len(), 1);
        let bad = describe(&received("m2", "garbage!", None), 1_000, false);
        assert!(!bad.readable && bad.unreadable.is_some() && bad.keys.is_empty());
    }

    #[test]
    fn selects_all_or_ids_and_names_the_missing() {
        let msgs = vec![received("a", "x", None), received("b", "y", None)];
        assert_eq!(select(&msgs, true, &[]).0.len(), 2);
        let (chosen, missing) = select(&msgs, false, &["b".into(), "zz".into()]);
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].message.message_id, "b");
        assert_eq!(missing, vec!["zz".to_string()]);
    }
}
