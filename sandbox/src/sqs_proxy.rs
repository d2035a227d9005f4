//! SQS's own faults, injected by the [`FaultProxy`](crate::FaultProxy) in front of moto
//! ([`FaultMode::Sqs`](crate::FaultMode::Sqs)). The SDK speaks SQS's JSON protocol
//! (`x-amz-target: AmazonSQS.<Action>`, `application/x-amz-json-1.0`), and reads an error's code
//! from the query-compatible header `x-amzn-query-error` when there is one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::proxy::{hold, read_request, send_upstream, Answer, Dropped, Shared, Upstream};

/// The throttling answer's body; the SDK's retry classifier counts `RequestThrottled` (the code
/// in the query-compatible header) and `ThrottlingException` as throttling.
pub const SQS_THROTTLE_BODY: &str =
    r#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#;

/// The per-entry error code of an injected send or delete failure.
pub const INJECTED_ENTRY_CODE: &str = "InternalError";

/// The SQS actions the faults tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqsAction {
    /// `SendMessageBatch`.
    SendMessageBatch,
    /// `DeleteMessageBatch`.
    DeleteMessageBatch,
    /// `ReceiveMessage`.
    ReceiveMessage,
    /// `SendMessage` (the DLQ's sends).
    SendMessage,
}

impl SqsAction {
    fn of(target: &str) -> Option<SqsAction> {
        match target.strip_prefix("AmazonSQS.")? {
            "SendMessageBatch" => Some(SqsAction::SendMessageBatch),
            "DeleteMessageBatch" => Some(SqsAction::DeleteMessageBatch),
            "ReceiveMessage" => Some(SqsAction::ReceiveMessage),
            "SendMessage" => Some(SqsAction::SendMessage),
            _ => None,
        }
    }
}

/// A slow SQS: requests of one action (or all) are held `before` they are forwarded and their
/// answers `after`. A hold ends early when the proxy's mode changes, and the request is then cut
/// (its connection closed): a healed proxy does not release stale requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slow {
    /// The action slowed; `None`: every request.
    pub action: Option<SqsAction>,
    /// Held before forwarding (SQS has not seen the request yet).
    pub before: Duration,
    /// Held after forwarding (SQS has acted; the answer is late).
    pub after: Duration,
}

/// What an SQS behind the proxy does wrong; each fraction is drawn per entry or request. The
/// default is a healthy SQS.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SqsFaults {
    /// Fraction of `SendMessageBatch` entries answered under `Failed` (not sent); the rest
    /// are forwarded and succeed.
    pub send_entries: f64,
    /// Fraction of `DeleteMessageBatch` entries answered under `Failed` (not deleted).
    pub delete_entries: f64,
    /// Fraction of `DeleteMessageBatch` entries answered `ReceiptHandleIsInvalid` (not deleted).
    pub invalid_receipts: f64,
    /// Fraction of requests (any action) answered with SQS's throttling error.
    pub throttle: f64,
    /// Slow answers.
    pub slow: Option<Slow>,
}

/// Handles one request under `faults`.
pub(crate) async fn handle(
    req: hyper::Request<Incoming>,
    faults: SqsFaults,
    shared: &Shared,
    client: &Upstream,
) -> Result<Answer, Dropped> {
    let (parts, body) = read_request(req).await?;
    let action = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(SqsAction::of);
    if faults.throttle > 0.0 && rand::random::<f64>() < faults.throttle {
        shared.counters.throttled.fetch_add(1, Ordering::SeqCst);
        return Ok(throttle_answer());
    }
    let slow = faults
        .slow
        .filter(|s| s.action.is_none() || s.action == action);
    if let Some(s) = slow {
        shared.counters.held.fetch_add(1, Ordering::SeqCst);
        if !hold(shared, s.before).await {
            return Err(Dropped("held, then cut"));
        }
    }
    let (body, failed) = match action {
        Some(SqsAction::SendMessageBatch) => split(&body, faults.send_entries),
        Some(SqsAction::DeleteMessageBatch) => {
            split(&body, faults.delete_entries + faults.invalid_receipts)
        }
        _ => (Some(body), Vec::new()),
    };
    let failed = label(failed, action, &faults);
    shared
        .counters
        .failed_entries
        .fetch_add(failed.len() as u64, Ordering::SeqCst);
    let answer = match body {
        Some(body) => send_upstream(parts, body, shared, client).await?,
        // Every entry failed: SQS would refuse an empty batch, so answer here.
        None => json_answer(json!({"Successful": [], "Failed": []})),
    };
    if let Some(s) = slow {
        if !hold(shared, s.after).await {
            return Err(Dropped("held, then cut"));
        }
    }
    Ok(if failed.is_empty() {
        answer
    } else {
        add_failed(answer, failed).await
    })
}

/// Draws the entries of a batch request to fail: the request to forward without them (`None`
/// when none is left) and the ids of those taken out.
fn split(body: &Bytes, chance: f64) -> (Option<Bytes>, Vec<String>) {
    if chance <= 0.0 {
        return (Some(body.clone()), Vec::new());
    }
    let Ok(mut request) = serde_json::from_slice::<Value>(body) else {
        return (Some(body.clone()), Vec::new());
    };
    let Some(entries) = request.get_mut("Entries").and_then(Value::as_array_mut) else {
        return (Some(body.clone()), Vec::new());
    };
    let mut failed = Vec::new();
    entries.retain(|e| {
        let fail = rand::random::<f64>() < chance;
        if fail {
            failed.push(
                e.get("Id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
        }
        !fail
    });
    if failed.is_empty() {
        return (Some(body.clone()), failed);
    }
    if entries.is_empty() {
        return (None, failed);
    }
    (Some(Bytes::from(request.to_string())), failed)
}

/// Each failed entry as SQS lists it: id, code, whose fault.
fn label(ids: Vec<String>, action: Option<SqsAction>, faults: &SqsFaults) -> Vec<Value> {
    let invalid_share = if action == Some(SqsAction::DeleteMessageBatch) {
        let total = faults.delete_entries + faults.invalid_receipts;
        if total > 0.0 {
            faults.invalid_receipts / total
        } else {
            0.0
        }
    } else {
        0.0
    };
    ids.into_iter()
        .map(|id| {
            if invalid_share > 0.0 && rand::random::<f64>() < invalid_share {
                json!({"Id": id, "SenderFault": true, "Code": "ReceiptHandleIsInvalid",
                       "Message": "The input receipt handle is invalid."})
            } else {
                json!({"Id": id, "SenderFault": false, "Code": INJECTED_ENTRY_CODE,
                       "Message": "failed by the ferry sandbox's SQS fault proxy"})
            }
        })
        .collect()
}

/// Adds `failed` to the `Failed` list of a batch answer (left alone if it is not one).
async fn add_failed(answer: Answer, failed: Vec<Value>) -> Answer {
    use http_body_util::BodyExt;
    let (parts, body) = answer.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let mut value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) if parts.status.is_success() => v,
        _ => return hyper::Response::from_parts(parts, http_body_util::Full::new(bytes)),
    };
    if let Some(map) = value.as_object_mut() {
        let list = map.entry("Failed").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.extend(failed);
        }
    }
    let mut answer = json_answer(value);
    *answer.status_mut() = parts.status;
    answer
}

fn json_answer(value: Value) -> Answer {
    let mut answer =
        hyper::Response::new(http_body_util::Full::new(Bytes::from(value.to_string())));
    answer.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    answer
}

fn throttle_answer() -> Answer {
    let mut answer = hyper::Response::new(http_body_util::Full::new(Bytes::from_static(
        SQS_THROTTLE_BODY.as_bytes(),
    )));
    *answer.status_mut() = hyper::StatusCode::BAD_REQUEST;
    let headers = answer.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    headers.insert(
        "x-amzn-query-error",
        hyper::header::HeaderValue::from_static("RequestThrottled;Sender"),
    );
    headers.insert(
        "x-amzn-requestid",
        hyper::header::HeaderValue::from_static("FERRYSANDBOXSQSTHROTTLE"),
    );
    answer
}
