//! The CPU part of a batch, without I/O: classify every record with the core, then pack what is
//! forwarded. The handler runs exactly this; the bench measures exactly this.

use crate::input::{Input, InputRef, Undecodable};
use aws_lambda_events::event::dynamodb::EventRecord;
use ferry_core::buffer::{self, BufferBatch, PackError};
use ferry_core::item::{describe_key, key_of};
use ferry_core::merge::StampHint;
use ferry_core::{classify, ChangeRecord, Classified, ClassifyError, Config, Hint};

/// One input of [`Plan::new`]: borrowed ([`InputRef`]: a forwarded image is cloned out of the
/// stream record) or mutably borrowed (`&mut Input`: a forwarded image is moved out, leaving the
/// record's `NewImage` empty: what the handler does, since it drops the records afterwards).
pub trait PlanInput {
    /// The stream record, or what is known of a record that did not decode.
    fn get(&self) -> Result<&EventRecord, &Undecodable>;
    /// The core's decision for the record (`None` for an undecodable one).
    fn classify(&mut self, config: &Config) -> Option<Result<Classified, ClassifyError>>;
}

impl PlanInput for InputRef<'_> {
    fn get(&self) -> Result<&EventRecord, &Undecodable> {
        match self {
            InputRef::Record(r) => Ok(r),
            InputRef::Undecodable(u) => Err(u),
        }
    }

    fn classify(&mut self, config: &Config) -> Option<Result<Classified, ClassifyError>> {
        match self {
            InputRef::Record(r) => Some(classify(*r, config)),
            InputRef::Undecodable(_) => None,
        }
    }
}

impl PlanInput for &mut Input {
    fn get(&self) -> Result<&EventRecord, &Undecodable> {
        match &**self {
            Input::Record(r) => Ok(r),
            Input::Undecodable(u) => Err(u),
        }
    }

    fn classify(&mut self, config: &Config) -> Option<Result<Classified, ClassifyError>> {
        match &mut **self {
            Input::Record(r) => Some(classify(r, config)),
            Input::Undecodable(_) => None,
        }
    }
}

/// What the core decided for one record.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Case 2: goes to every destination's buffer.
    Forward,
    /// Case 4: a hint; the current item gets a version (stamp or tombstone).
    Reconcile,
    /// Case 1: written here by a drain.
    ReplicatedIn,
    /// Case 3: removed by the table's TTL.
    TtlExpiry,
    /// The item filter excludes the key.
    Filtered,
    /// Cannot be processed, ever: logged, counted and skipped (see the crate docs).
    Poison(String),
    /// A write of the other merge mode: a configuration error, not the record's fault. The
    /// batch fails from here (the stream retries it) until the configuration is fixed.
    ModeMismatch(String),
}

/// One record's place in the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub sequence_number: Option<String>,
    pub decision: Decision,
    /// The key, described, for a poison record whose key was readable (other records' keys
    /// are found through [`Plan::key_of`] without describing every key up front).
    pub poison_key: Option<String>,
}

/// The decisions for a batch, in record order.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub slots: Vec<Slot>,
    /// Batch index of each record in [`Plan::forwards`] (ascending).
    pub forward_index: Vec<usize>,
    /// The change records to forward, in batch order (kept apart from their indexes so the core's
    /// `pack` reads them in place, without a copy).
    pub forwards: Vec<ChangeRecord>,
    /// Case-4 hints with their batch index, in batch order.
    pub hints: Vec<(usize, Hint)>,
    /// Attribute mode's case-4 hints (attributes to stamp) with their batch index.
    pub stamp_hints: Vec<(usize, StampHint)>,
    /// The newest record's `ApproximateCreationDateTime`, ms since the epoch.
    pub newest_created_ms: Option<i64>,
}

/// The forwarded records packed into `SendMessageBatch` calls.
#[derive(Clone, Debug, Default)]
pub struct Packed {
    pub batches: Vec<BufferBatch>,
    /// For each batch, for each of its messages: the batch index of the message's first record.
    /// A message that fails makes that record the first not known to be sent.
    pub first_record: Vec<Vec<usize>>,
    /// How many forwarded records the batches carry.
    pub records: usize,
}

impl Plan {
    /// Classifies every record. Never fails: what cannot be classified is [`Decision::Poison`].
    /// Inputs are [`InputRef`]s (the records stay as they are) or `&mut Input`s (a forwarded
    /// record's image is moved out instead of cloned).
    pub fn new(inputs: impl IntoIterator<Item = impl PlanInput>, config: &Config) -> Plan {
        let inputs = inputs.into_iter();
        let mut plan = Plan {
            slots: Vec::with_capacity(inputs.size_hint().0),
            ..Plan::default()
        };
        for (index, mut input) in inputs.enumerate() {
            let record = match input.get() {
                Err(u) => {
                    plan.slots.push(Slot {
                        sequence_number: u.sequence_number.clone(),
                        decision: Decision::Poison(u.reason.clone()),
                        poison_key: u.key.clone(),
                    });
                    continue;
                }
                Ok(r) => r,
            };
            let sequence_number = record.change.sequence_number.clone();
            let created = record
                .change
                .approximate_creation_date_time
                .timestamp_millis();
            if created > 0 {
                plan.newest_created_ms = plan.newest_created_ms.max(Some(created));
            }
            let mut poison_key = None;
            let decision = if sequence_number.is_none() {
                // Lambda always sends one; without it the record could not even be reported as
                // failed, so it cannot take part in the checkpointing.
                Decision::Poison("the record has no SequenceNumber".to_string())
            } else {
                match input
                    .classify(config)
                    .unwrap_or_else(|| unreachable_classify(&sequence_number))
                {
                    Ok(Classified::Forward(change)) => {
                        plan.forward_index.push(index);
                        plan.forwards.push(change);
                        Decision::Forward
                    }
                    Ok(Classified::Reconcile(hint)) => {
                        plan.hints.push((index, hint));
                        Decision::Reconcile
                    }
                    Ok(Classified::StampAttributes(hint)) => {
                        plan.stamp_hints.push((index, hint));
                        Decision::Reconcile
                    }
                    Ok(Classified::ReplicatedIn) => Decision::ReplicatedIn,
                    Ok(Classified::TtlExpiry) => Decision::TtlExpiry,
                    Ok(Classified::Filtered) => Decision::Filtered,
                    Err(e @ ClassifyError::ModeMismatch { .. }) => {
                        Decision::ModeMismatch(e.to_string())
                    }
                    Err(e) => {
                        // Classify moves nothing out of a record it refuses: the keys are there.
                        poison_key = input
                            .get()
                            .ok()
                            .and_then(|r| key_of(&r.change.keys, &config.key).ok())
                            .map(|k| describe_key(&k));
                        Decision::Poison(e.to_string())
                    }
                }
            };
            plan.slots.push(Slot {
                sequence_number,
                decision,
                poison_key,
            });
        }
        plan
    }

    /// The key of the record at `index`, described for logs, when the plan knows it.
    pub fn key_of(&self, index: usize) -> Option<String> {
        if let Some(key) = self.slots.get(index).and_then(|s| s.poison_key.clone()) {
            return Some(key);
        }
        if let Ok(p) = self.forward_index.binary_search(&index) {
            return self.forwards.get(p).map(|r| describe_key(&r.key));
        }
        let hint = self
            .hints
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, h)| &h.key);
        let stamp_hint = || {
            self.stamp_hints
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, h)| &h.key)
        };
        hint.or_else(stamp_hint).map(describe_key)
    }

    /// Packs the forwarded records whose batch index is below `before` (the first failure, or
    /// the batch's length). A record too large for any SQS message is poison: it is taken out
    /// of the plan and its slot says why. Err only if the core names a record that is not in the
    /// plan (a bug); the caller then sends nothing and reports the first forwarded record.
    pub fn pack_forwards(&mut self, before: usize) -> Result<Packed, String> {
        loop {
            let n = self.forward_index.partition_point(|&i| i < before);
            match buffer::pack(&self.forwards[..n]) {
                Ok(batches) => return Ok(self.map_messages(batches, n)),
                Err(PackError::RecordTooLarge { key, bytes }) => {
                    let position = (0..n)
                        .find(|&p| {
                            describe_key(&self.forwards[p].key) == key
                                && self.forwards[p].encoded_len() == bytes
                        })
                        .ok_or_else(|| {
                            format!("pack named key {key}, which is not in the batch")
                        })?;
                    let index = self.forward_index.remove(position);
                    self.forwards.remove(position);
                    self.slots[index].poison_key = Some(key.clone());
                    self.slots[index].decision = Decision::Poison(format!(
                        "key {key}: the change record is {bytes} bytes encoded and cannot fit an SQS message"
                    ));
                }
            }
        }
    }

    fn map_messages(&self, batches: Vec<BufferBatch>, records: usize) -> Packed {
        let mut next = 0;
        let first_record = batches
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .map(|message| {
                        let first = self.forward_index.get(next).copied().unwrap_or(usize::MAX);
                        next += message.records;
                        first
                    })
                    .collect()
            })
            .collect();
        Packed {
            batches,
            first_record,
            records,
        }
    }
}

/// `PlanInput::classify` answers for every input whose `get` is a record; should that ever not
/// hold, the record is poison rather than a panic.
fn unreachable_classify(sequence: &Option<String>) -> Result<Classified, ClassifyError> {
    Err(ClassifyError::UnknownEvent {
        sequence: sequence.clone().unwrap_or_default(),
        name: "(not a decoded record)".to_string(),
    })
}
