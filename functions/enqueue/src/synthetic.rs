//! Stream records in Lambda's exact JSON shape, built from items: for tests, the bench and local
//! tools. What they produce decodes through the same path as a real invocation.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use ferry_core::Item;
use serde_json::{json, Value};

/// The DynamoDB service principal TTL deletions carry.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// One stream record to build.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    pub event_name: &'static str,
    pub sequence_number: String,
    pub keys: Item,
    pub old_image: Option<Item>,
    pub new_image: Option<Item>,
    /// `ApproximateCreationDateTime`, ms since the epoch.
    pub created_ms: u64,
    /// A REMOVE made by the table's TTL (`userIdentity` of the DynamoDB service).
    pub ttl_removal: bool,
    pub region: String,
    pub table: String,
}

impl StreamRecord {
    fn new(event_name: &'static str, sequence_number: &str, keys: &Item) -> Self {
        StreamRecord {
            event_name,
            sequence_number: sequence_number.to_string(),
            keys: keys.clone(),
            old_image: None,
            new_image: None,
            created_ms: ferry_core::clock::system_now_ms(),
            ttl_removal: false,
            region: "us-east-1".to_string(),
            table: "ferry-local".to_string(),
        }
    }

    pub fn insert(sequence_number: &str, keys: &Item, new: &Item) -> Self {
        StreamRecord {
            new_image: Some(new.clone()),
            ..Self::new("INSERT", sequence_number, keys)
        }
    }

    pub fn modify(sequence_number: &str, keys: &Item, old: &Item, new: &Item) -> Self {
        StreamRecord {
            old_image: Some(old.clone()),
            new_image: Some(new.clone()),
            ..Self::new("MODIFY", sequence_number, keys)
        }
    }

    /// A delete made by an application.
    pub fn remove(sequence_number: &str, keys: &Item, old: &Item) -> Self {
        StreamRecord {
            old_image: Some(old.clone()),
            ..Self::new("REMOVE", sequence_number, keys)
        }
    }

    /// A delete made by the table's TTL.
    pub fn ttl_remove(sequence_number: &str, keys: &Item, old: &Item) -> Self {
        StreamRecord {
            ttl_removal: true,
            ..Self::remove(sequence_number, keys, old)
        }
    }

    pub fn created_at(mut self, ms: u64) -> Self {
        self.created_ms = ms;
        self
    }

    pub fn in_region(mut self, region: &str) -> Self {
        self.region = region.to_string();
        self
    }

    /// The record as Lambda sends it.
    pub fn to_json(&self) -> Value {
        let mut change = serde_json::Map::new();
        change.insert(
            "ApproximateCreationDateTime".into(),
            json!((self.created_ms / 1000) as f64 + (self.created_ms % 1000) as f64 / 1000.0),
        );
        change.insert("Keys".into(), json!(self.keys));
        if let Some(new) = &self.new_image {
            change.insert("NewImage".into(), json!(new));
        }
        if let Some(old) = &self.old_image {
            change.insert("OldImage".into(), json!(old));
        }
        change.insert("SequenceNumber".into(), json!(self.sequence_number));
        let size = Value::Object(change.clone()).to_string().len();
        change.insert("SizeBytes".into(), json!(size));
        change.insert("StreamViewType".into(), json!("NEW_AND_OLD_IMAGES"));
        let mut record = json!({
            "eventID": format!("{:032x}", fxhash(&self.sequence_number)),
            "eventName": self.event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": Value::Object(change),
            "eventSourceARN": format!(
                "arn:aws:dynamodb:{}:123456789012:table/{}/stream/2024-11-25T20:00:00.000",
                self.region, self.table
            ),
        });
        if self.ttl_removal {
            record["userIdentity"] = json!({ "type": "Service", "principalId": TTL_PRINCIPAL });
        }
        record
    }

    pub fn to_record(&self) -> Result<EventRecord, serde_json::Error> {
        serde_json::from_value(self.to_json())
    }
}

/// `{"Records": [...]}` as Lambda sends it.
pub fn event_json(records: &[StreamRecord]) -> Value {
    json!({ "Records": records.iter().map(StreamRecord::to_json).collect::<Vec<_>>() })
}

/// The same, decoded.
pub fn event(records: &[StreamRecord]) -> Result<Event, serde_json::Error> {
    serde_json::from_value(event_json(records))
}

/// An event holding already-decoded records (what a stream poller hands out).
pub fn event_of(records: Vec<EventRecord>) -> Event {
    let mut event = Event::default();
    event.records = records;
    event
}

/// A stable, made-up event ID.
fn fxhash(s: &str) -> u128 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
    })
}
