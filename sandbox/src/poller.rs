//! A DynamoDB Streams poller that hands out records exactly as Lambda delivers them.
//!
//! `DescribeStream` and `GetShardIterator` go through `aws-sdk-dynamodbstreams`; `GetRecords` is
//! a raw JSON call whose records are deserialized straight into
//! [`aws_lambda_events::event::dynamodb::EventRecord`] with `eventSourceARN` added, so nothing is
//! lost in SDK types (numbers stay strings, `userIdentity` is kept).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::EventRecord;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use bytes::Bytes;

use crate::clients::{streams_client_with, ClientOptions};
use crate::error::{Result, SandboxError};
use crate::http::{aws_json_error, RawClient};

/// Where a poller starts reading the shards that exist when it first describes the stream.
/// Shards that appear later are always read from their start, as Lambda does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StartingPosition {
    /// From the oldest record still in the stream.
    #[default]
    TrimHorizon,
    /// Only records written after the first describe.
    Latest,
}

#[derive(Debug)]
struct ShardState {
    parent: Option<String>,
    starting_sequence: String,
    /// The iterator to continue from; `None` until first acquired.
    iterator: Option<String>,
    /// The last sequence number handed out from this shard.
    last_sequence: Option<String>,
    /// Whether the first describe saw this shard (for [`StartingPosition::Latest`]).
    initial: bool,
    /// `GetRecords` returned no next iterator: the shard is closed and fully read.
    finished: bool,
}

/// Lambda's checkpoint on a reported batch item failure: takes out of `records` the one with
/// sequence number `failed` and every one after it (all of them when none has it), to be sent
/// again in order.
pub fn resend_from(records: &mut Vec<EventRecord>, failed: &str) -> Vec<EventRecord> {
    let from = records
        .iter()
        .position(|r| r.change.sequence_number.as_deref() == Some(failed))
        .unwrap_or(0);
    records.split_off(from)
}

/// Polls one DynamoDB stream and returns its records in order, as Lambda's
/// [`EventRecord`]s.
///
/// Shards are read parent before child (shard lineage); a shard counts as finished only when
/// `GetRecords` returns no `NextShardIterator` (never because the description shows an
/// `EndingSequenceNumber`, which dynoxide also reports for its open shard). Positions only move
/// after a successful call, so after an error (endpoint down, ...) the next call continues where
/// the last successful one stopped.
#[derive(Debug)]
pub struct StreamPoller {
    endpoint: String,
    region: String,
    stream_arn: String,
    streams: aws_sdk_dynamodbstreams::Client,
    http: RawClient,
    start: StartingPosition,
    shards: BTreeMap<String, ShardState>,
    described: bool,
    last_describe: Option<Instant>,
    refresh_interval: Duration,
    request_timeout: Duration,
    rewrite_region: bool,
}

impl StreamPoller {
    /// A poller for `stream_arn` on `endpoint` (dynoxide, moto or DynamoDB Local), reading from
    /// [`StartingPosition::TrimHorizon`]. Records' `awsRegion` is set to `region` (dynoxide says
    /// `"dynoxide"`); see [`keep_emulator_region`](Self::keep_emulator_region).
    pub fn new(endpoint: &str, region: &str, stream_arn: &str) -> Self {
        let options = ClientOptions {
            connect_timeout: Duration::from_millis(500),
            attempt_timeout: Some(Duration::from_secs(5)),
            operation_timeout: Some(Duration::from_secs(5)),
            max_attempts: 1,
        };
        StreamPoller {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            stream_arn: stream_arn.to_string(),
            streams: streams_client_with(endpoint, region, &options),
            http: RawClient::new(),
            start: StartingPosition::TrimHorizon,
            shards: BTreeMap::new(),
            described: false,
            last_describe: None,
            refresh_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            rewrite_region: true,
        }
    }

    /// A poller for the stream of `table` (looked up with `DescribeTable`).
    pub async fn for_table(endpoint: &str, region: &str, table: &str) -> Result<Self> {
        let client = crate::clients::dynamodb_client(endpoint, region);
        let arn = crate::dynamo::stream_arn_of(&client, table).await?;
        Ok(Self::new(endpoint, region, &arn))
    }

    /// Sets the starting position (only meaningful before the first poll).
    pub fn starting_at(mut self, start: StartingPosition) -> Self {
        self.start = start;
        self
    }

    /// How often the shard list is refreshed at most (default 1 s; always refreshed when a shard
    /// closes).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Time allowed for each call (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Keeps the emulator's own `awsRegion` in records instead of the poller's region.
    pub fn keep_emulator_region(mut self) -> Self {
        self.rewrite_region = false;
        self
    }

    /// The stream's ARN (also each record's `eventSourceARN`).
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// The region records are attributed to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Up to `max` records, in order, continuing from the last call. An empty vector means no
    /// new records right now. On error nothing is consumed.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<EventRecord>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let stale = self
            .last_describe
            .is_none_or(|t| t.elapsed() >= self.refresh_interval);
        if !self.described || stale {
            self.describe().await?;
        }
        loop {
            let mut progressed = false;
            let mut closed_one = false;
            for shard_id in self.ready_shards() {
                while out.len() < max {
                    let (records, finished) = self.read_shard(&shard_id, max - out.len()).await?;
                    let got = records.len();
                    out.extend(records);
                    if finished {
                        closed_one = true;
                        progressed = true;
                        break;
                    }
                    if got == 0 {
                        break;
                    }
                    progressed = true;
                }
                if out.len() >= max {
                    return Ok(out);
                }
            }
            if closed_one {
                // Children of a shard that just closed may already exist.
                self.describe().await?;
            }
            // Only a closed shard can make more shards ready; otherwise every ready shard has
            // been read up to its end or the batch is full.
            if !closed_one || !progressed || out.len() >= max {
                return Ok(out);
            }
        }
    }

    /// Polls until at least `min` records have arrived or `timeout` passes; returns what arrived
    /// (possibly more than `min`, never fewer unless the time ran out, then it is an error).
    /// Transport errors are retried until the deadline.
    pub async fn collect(&mut self, min: usize, timeout: Duration) -> Result<Vec<EventRecord>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut last_error = None;
        while out.len() < min {
            match self.next_batch(1000).await {
                Ok(batch) => {
                    let empty = batch.is_empty();
                    out.extend(batch);
                    if !empty {
                        continue;
                    }
                }
                Err(e) if e.is_transport() => last_error = Some(e),
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout {
                    what: format!("{min} stream records (got {})", out.len()),
                    timeout,
                    detail: last_error
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(out)
    }

    /// Shards that may be read now, parents first, then by starting sequence number.
    fn ready_shards(&self) -> Vec<String> {
        let mut ready: Vec<(&String, &ShardState)> = self
            .shards
            .iter()
            .filter(|(_, s)| !s.finished)
            .filter(|(_, s)| match &s.parent {
                Some(parent) => self.shards.get(parent).is_none_or(|p| p.finished),
                None => true,
            })
            .collect();
        ready.sort_by(|a, b| {
            sequence_key(&a.1.starting_sequence).cmp(&sequence_key(&b.1.starting_sequence))
        });
        ready.into_iter().map(|(id, _)| id.clone()).collect()
    }

    async fn describe(&mut self) -> Result<()> {
        let mut exclusive_start: Option<String> = None;
        let first = !self.described;
        loop {
            let response = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(exclusive_start.clone())
                .send()
                .await
                .map_err(|e| SandboxError::sdk("DescribeStream", e))?;
            let Some(description) = response.stream_description else {
                return Err(SandboxError::Decode {
                    what: "DescribeStream".into(),
                    detail: "no StreamDescription".into(),
                });
            };
            for shard in description.shards.unwrap_or_default() {
                let Some(id) = shard.shard_id else { continue };
                self.shards.entry(id).or_insert_with(|| ShardState {
                    parent: shard.parent_shard_id,
                    starting_sequence: shard
                        .sequence_number_range
                        .and_then(|r| r.starting_sequence_number)
                        .unwrap_or_default(),
                    iterator: None,
                    last_sequence: None,
                    initial: first,
                    finished: false,
                });
            }
            exclusive_start = description.last_evaluated_shard_id;
            if exclusive_start.is_none() {
                break;
            }
        }
        self.described = true;
        self.last_describe = Some(Instant::now());
        Ok(())
    }

    async fn acquire_iterator(&self, shard_id: &str, state: &ShardState) -> Result<String> {
        let mut request = self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id);
        request = match (&state.last_sequence, self.start, state.initial) {
            (Some(seq), _, _) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            (None, StartingPosition::Latest, true) => {
                request.shard_iterator_type(ShardIteratorType::Latest)
            }
            (None, _, _) => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let response = request
            .send()
            .await
            .map_err(|e| SandboxError::sdk("GetShardIterator", e))?;
        response.shard_iterator.ok_or_else(|| SandboxError::Decode {
            what: "GetShardIterator".into(),
            detail: "no ShardIterator".into(),
        })
    }

    /// One `GetRecords` on a shard; returns its records and whether the shard is finished.
    async fn read_shard(
        &mut self,
        shard_id: &str,
        limit: usize,
    ) -> Result<(Vec<EventRecord>, bool)> {
        let Some(page) = self.fetch_page(shard_id, limit).await? else {
            return Ok((Vec::new(), true));
        };
        let records = page
            .records
            .into_iter()
            .map(|raw| self.lambda_record(raw, shard_id))
            .collect::<Result<Vec<EventRecord>>>()?;
        let finished = page.next_shard_iterator.is_none();
        if let Some(state) = self.shards.get_mut(shard_id) {
            if let Some(seq) = records
                .last()
                .and_then(|r| r.change.sequence_number.clone())
            {
                state.last_sequence = Some(seq);
            }
            state.iterator = page.next_shard_iterator;
            state.finished = finished;
        }
        Ok((records, finished))
    }

    /// The shard's next page, read with its saved iterator or a new one; an expired or trimmed
    /// iterator is replaced once. `None`: the shard is not known.
    async fn fetch_page(&mut self, shard_id: &str, limit: usize) -> Result<Option<RawPage>> {
        let Some(state) = self.shards.get(shard_id) else {
            return Ok(None);
        };
        let mut iterator = match &state.iterator {
            Some(it) => it.clone(),
            None => self.acquire_iterator(shard_id, state).await?,
        };
        let mut retried = false;
        loop {
            match self.get_records(&iterator, limit).await {
                Ok(page) => return Ok(Some(page)),
                Err(SandboxError::Service { error_type, .. })
                    if !retried
                        && (error_type.ends_with("ExpiredIteratorException")
                            || error_type.ends_with("TrimmedDataAccessException")) =>
                {
                    retried = true;
                    let Some(state) = self.shards.get(shard_id) else {
                        return Ok(None);
                    };
                    iterator = self.acquire_iterator(shard_id, state).await?;
                }
                Err(e) => {
                    // Keep a freshly acquired iterator: it does not move the position.
                    if let Some(state) = self.shards.get_mut(shard_id) {
                        state.iterator = Some(iterator);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// A record of `shard_id` as the Streams API returns it, in the shape Lambda delivers.
    fn lambda_record(&self, mut raw: serde_json::Value, shard_id: &str) -> Result<EventRecord> {
        if let Some(object) = raw.as_object_mut() {
            // The Streams API spells the identity `PrincipalId`/`Type`; Lambda delivers
            // `principalId`/`type`. Hand out Lambda's shape, or TTL removals lose their
            // identity and read as application deletes.
            if let Some(serde_json::Value::Object(identity)) = object.get_mut("userIdentity") {
                for (api, lambda) in [("PrincipalId", "principalId"), ("Type", "type")] {
                    if let Some(v) = identity.remove(api) {
                        identity.entry(lambda).or_insert(v);
                    }
                }
            }
            object.insert(
                "eventSourceARN".into(),
                serde_json::Value::String(self.stream_arn.clone()),
            );
            if self.rewrite_region {
                object.insert(
                    "awsRegion".into(),
                    serde_json::Value::String(self.region.clone()),
                );
            }
        }
        serde_json::from_value(raw).map_err(|e| SandboxError::Decode {
            what: format!("a GetRecords record of {shard_id}"),
            detail: e.to_string(),
        })
    }

    async fn get_records(&self, iterator: &str, limit: usize) -> Result<RawPage> {
        let body = serde_json::json!({
            "ShardIterator": iterator,
            "Limit": limit.clamp(1, 1000),
        });
        let body = serde_json::to_vec(&body).map_err(|e| SandboxError::Decode {
            what: "GetRecords request".into(),
            detail: e.to_string(),
        })?;
        let response = self
            .http
            .amz_json(
                &self.endpoint,
                &self.region,
                "DynamoDBStreams_20120810.GetRecords",
                Bytes::from(body),
                self.request_timeout,
            )
            .await?;
        if response.status != 200 {
            let (error_type, message) = aws_json_error(&response.body);
            return Err(SandboxError::Service {
                operation: "GetRecords".into(),
                status: response.status,
                error_type,
                message,
            });
        }
        serde_json::from_slice(&response.body).map_err(|e| SandboxError::Decode {
            what: "GetRecords response".into(),
            detail: e.to_string(),
        })
    }
}

#[derive(serde::Deserialize)]
struct RawPage {
    #[serde(rename = "Records", default)]
    records: Vec<serde_json::Value>,
    #[serde(rename = "NextShardIterator", default)]
    next_shard_iterator: Option<String>,
}

/// Sequence numbers are decimal strings of varying length: compare numerically.
fn sequence_key(seq: &str) -> (usize, &str) {
    let trimmed = seq.trim_start_matches('0');
    (trimmed.len(), trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_numerically() {
        assert!(sequence_key("900") < sequence_key("1000"));
        assert!(sequence_key("000123") == sequence_key("123"));
    }
}
