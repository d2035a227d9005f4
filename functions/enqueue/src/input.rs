//! Decoding Lambda's stream event one record at a time.
//!
//! Lambda hands the function one JSON document. Decoding it as a whole would turn a single
//! malformed record (a number that is not a string, a binary that is not base64) into an
//! invocation error: the whole batch would be retried, fail the same way, and hold the shard.
//! So the payload is decoded as a whole only on the fast path; when that fails, each record is
//! decoded on its own and the ones that do not decode become [`Undecodable`] poison entries that
//! still carry what could be read of them (sequence number, event ID, key).

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use ferry_core::item::describe_key;
use ferry_core::Item;
use serde::Deserialize;
use serde_json::value::RawValue;

/// One record of the batch, decoded or not.
// Decoded records are the common case and the vector is built once per batch: boxing them
// would cost an allocation per record to save bytes on the rare undecodable one.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Record(EventRecord),
    Undecodable(Undecodable),
}

/// A record that is valid JSON but not a stream record Ferry can read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Undecodable {
    pub sequence_number: Option<String>,
    pub event_id: Option<String>,
    /// The key, described for logs (`pk=S:user#1`), when the `Keys` part was readable.
    pub key: Option<String>,
    /// Why it did not decode, with item values redacted.
    pub reason: String,
}

/// A borrowed [`Input`]: the handler reads records where they are.
#[derive(Clone, Copy, Debug)]
pub enum InputRef<'a> {
    Record(&'a EventRecord),
    Undecodable(&'a Undecodable),
}

impl Input {
    pub fn as_ref(&self) -> InputRef<'_> {
        match self {
            Input::Record(r) => InputRef::Record(r),
            Input::Undecodable(u) => InputRef::Undecodable(u),
        }
    }
}

/// The payload is not a DynamoDB stream event at all (no `Records` array): nothing in it can be
/// attributed to a record, so the invocation fails as a whole.
#[derive(Debug, thiserror::Error)]
#[error("the payload is not a DynamoDB stream event: {0}")]
pub struct PayloadError(String);

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<&'a RawValue>,
}

/// Decodes a Lambda DynamoDB stream event. Malformed records become [`Input::Undecodable`];
/// only a payload without a `Records` array is an error.
pub fn decode_event(payload: &str) -> Result<Vec<Input>, PayloadError> {
    // Fast path: the whole event at once (one pass, no per-record copies).
    if let Ok(event) = serde_json::from_str::<Event>(payload) {
        return Ok(event.records.into_iter().map(Input::Record).collect());
    }
    let raw: RawEvent<'_> =
        serde_json::from_str(payload).map_err(|e| PayloadError(redact(&e.to_string())))?;
    Ok(raw
        .records
        .into_iter()
        .map(|r| match serde_json::from_str::<EventRecord>(r.get()) {
            Ok(record) => Input::Record(record),
            Err(e) => Input::Undecodable(peek(r.get(), &e)),
        })
        .collect())
}

/// Whatever can be read from a record that does not decode, to log and report it.
fn peek(raw: &str, error: &serde_json::Error) -> Undecodable {
    let value: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let change = &value["dynamodb"];
    let key = serde_json::from_value::<Item>(change["Keys"].clone())
        .ok()
        .filter(|k| !k.is_empty())
        .map(|k| describe_key(&k));
    Undecodable {
        sequence_number: text(&change["SequenceNumber"]),
        event_id: text(&value["eventID"]),
        key,
        reason: format!(
            "record does not decode ({:?} error at column {}): {}",
            error.classify(),
            error.column(),
            redact(&error.to_string())
        ),
    }
}

/// serde's "invalid type/value/length" messages quote the offending value between backticks;
/// item values must never reach the logs, so those quotes are blanked. Field names in other
/// messages ("missing field `eventName`") are kept: they say what is wrong.
pub(crate) fn redact(message: &str) -> String {
    if !message.starts_with("invalid") {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '`' {
            inside = !inside;
            out.push(c);
            if !inside {
                continue;
            }
            out.push('…');
        } else if !inside {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_values_not_field_names() {
        assert_eq!(
            redact("invalid type: integer `5`, expected a string at line 1 column 9"),
            "invalid type: integer `…`, expected a string at line 1 column 9"
        );
        assert_eq!(
            redact("missing field `eventName` at line 1"),
            "missing field `eventName` at line 1"
        );
    }

    #[test]
    fn a_bad_record_does_not_spoil_the_others() {
        let payload = r#"{"Records":[
            {"awsRegion":"us-east-1","eventID":"1","eventName":"INSERT",
             "dynamodb":{"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"a"}},"SequenceNumber":"100","SizeBytes":5}},
            {"awsRegion":"us-east-1","eventID":"2","eventName":"INSERT",
             "dynamodb":{"Keys":{"pk":{"S":"b"}},"NewImage":{"pk":{"S":"b"},"n":{"N":5}},"SequenceNumber":"200","SizeBytes":5}}
        ]}"#;
        let inputs = decode_event(payload).expect("a stream event");
        assert_eq!(inputs.len(), 2);
        assert!(matches!(inputs[0], Input::Record(_)));
        let Input::Undecodable(u) = &inputs[1] else {
            panic!("second record should not decode");
        };
        assert_eq!(u.sequence_number.as_deref(), Some("200"));
        assert_eq!(u.event_id.as_deref(), Some("2"));
        assert_eq!(u.key.as_deref(), Some("pk=S:b"));
        assert!(!u.reason.contains("`5`"), "{}", u.reason);
    }

    #[test]
    fn not_a_stream_event_is_an_error() {
        assert!(decode_event(r#"{"hello":"world"}"#).is_err());
        assert!(decode_event("[]").is_err());
        assert_eq!(
            decode_event(r#"{"Records":[]}"#).map(|v| v.len()).ok(),
            Some(0)
        );
    }
}
