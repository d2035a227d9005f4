//! Stamped writes: `PutItem`, `UpdateItem`, tombstone deletes, each on the application's own
//! fluent builder.
//!
//! How `send` works is in the crate docs (lib.rs).

use crate::error::{Error, RequestError};
use crate::expr::{
    Clause, Parts, UpdateExpression, N_DELETED, N_ORIGIN, N_PK, N_SUM, N_TS, N_TTL, V_MARKER,
    V_ORIGIN, V_TRUE, V_TS, V_TTL,
};
use crate::ferry::{Ferry, Previous};
use crate::{SdkItem, SdkValue};
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use ferry_core::digest::seal_of;
use ferry_core::reconcile::tombstone_item;
use ferry_core::{AttributeValue, Item, Version};

/// What a stamped write does when the stored item holds a version not older than its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Guard {
    /// Write above it: the version becomes `stored + 1` (`send` only; a one-shot
    /// [`stamped`](PutRequest::stamped) request carries no version condition at all).
    #[default]
    Overwrite,
    /// Refuse ([`Error::Refused`]): this write would lose under last-writer-wins, so it is not
    /// made. The condition is the destination's apply rule, ANDed with the application's.
    RefuseNewer,
}

/// A request stamped with a version, for the application to send (or to put in a transaction).
#[derive(Clone, Debug)]
pub struct Stamped<T> {
    pub request: T,
    /// The version the request writes.
    pub version: Version,
}

/// The answer of a `send` that wrote.
#[derive(Clone, Debug)]
pub struct Written<O> {
    /// DynamoDB's answer to the request that succeeded.
    pub output: O,
    /// The version written: pass it as [`Previous`] to the key's next write.
    pub version: Version,
    /// Requests made (1 unless a condition failed first).
    pub attempts: u32,
}

const VERSION_GUARD: &str = "attribute_not_exists(#ferry_ts) OR #ferry_ts < :ferry_ts \
     OR (#ferry_ts = :ferry_ts AND #ferry_origin < :ferry_origin)";
const ABSENT: &str = "attribute_not_exists(#ferry_pk) OR #ferry_deleted = :ferry_true";
const STAMP_ACTIONS: &str = "#ferry_ts = :ferry_ts, #ferry_origin = :ferry_origin";

impl Ferry {
    /// A stamped and sealed `PutItem`: build the request as usual (client, table, item,
    /// condition, ...), then [`send`](PutRequest::send) it through Ferry. Ferry's attributes the
    /// item carries (an item read and changed) are replaced; to write back an image as it was
    /// read, use [`Ferry::restore`] or [`Ferry::copy_to`].
    pub fn put(&self, put: PutItemFluentBuilder) -> PutRequest {
        PutRequest {
            ferry: self.clone(),
            put,
            previous: Previous::Unknown,
            guard: Guard::Overwrite,
            if_absent: false,
        }
    }

    /// A stamped `UpdateItem`: the application's update expression, condition and placeholders
    /// stay; Ferry adds the version, and brings a deleted key back.
    pub fn update(&self, update: UpdateItemFluentBuilder) -> UpdateRequest {
        UpdateRequest {
            ferry: self.clone(),
            update,
            previous: Previous::Unknown,
            guard: Guard::Overwrite,
        }
    }

    /// A delete, written as a tombstone (never a hard delete, which could not replicate): a
    /// `PutItem` of the key, a fresh version, the marker and the TTL attribute set to now + the
    /// configured lifetime, sealed. `put` carries the client, the table and optionally the application's
    /// own condition, but no item.
    pub fn delete(&self, put: PutItemFluentBuilder, key: SdkItem) -> DeleteRequest {
        DeleteRequest {
            ferry: self.clone(),
            put,
            key,
            previous: Previous::Unknown,
            guard: Guard::Overwrite,
        }
    }

    /// Stamps and seals an item map in place and returns the version: for requests the helper
    /// does not wrap, such as a `PutRequest` of `BatchWriteItem` (which takes no condition, so
    /// the write is blind: above `previous` when it is known, else above the version the item
    /// carries, else at the clock). Ferry's attributes the item carries (it was read) are
    /// replaced, as in [`Ferry::put`].
    pub fn stamp(&self, item: &mut SdkItem, previous: &Previous) -> Result<Version, Error> {
        self.check_put_item(item)?;
        let known = self.known_for_put(previous, item)?;
        self.strip_ferry_attributes(item);
        let version = self.next_version(known.as_ref());
        self.stamp_item(item, &version);
        Ok(version)
    }

    /// The tombstone item for `key` (key, version, marker, TTL), e.g. for a `PutRequest` of
    /// `BatchWriteItem`: a batch `DeleteRequest` is a hard delete.
    pub fn tombstone_item(
        &self,
        key: &SdkItem,
        previous: &Previous,
    ) -> Result<Stamped<SdkItem>, Error> {
        let key = self.check_key(key)?;
        let version = self.next_version(previous.version());
        Ok(Stamped {
            request: self.tombstone(&key, &version),
            version,
        })
    }

    /// Ferry's version condition with its placeholders.
    pub(crate) fn guard_version(&self, parts: &mut Parts, version: &Version) {
        self.version_placeholders(parts, version);
        parts.and(VERSION_GUARD);
    }

    fn version_placeholders(&self, parts: &mut Parts, version: &Version) {
        let names = &self.config.names;
        parts
            .name(N_TS, &names.ts)
            .name(N_ORIGIN, &names.origin)
            .value(V_TS, SdkValue::N(version.ts_ms.to_string()))
            .value(V_ORIGIN, SdkValue::S(version.origin.clone()));
    }

    /// The stored version when it is not older than `version` (Ferry's condition failed on it),
    /// evaluated as DynamoDB does.
    pub(crate) fn newer_stored(
        &self,
        stored: Option<&SdkItem>,
        version: &Version,
    ) -> Result<Option<Version>, Error> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        Ok(self.version_of(stored)?.filter(|s| s >= version))
    }

    /// The item with the version written into it, then sealed: the seal (`ferry_core::digest`)
    /// covers the whole item as written, so enqueue forwards the write as it is. The item must
    /// not carry Ferry's other attributes (see [`Ferry::strip_ferry_attributes`]).
    pub(crate) fn stamp_item(&self, item: &mut SdkItem, version: &Version) {
        let names = &self.config.names;
        item.insert(names.ts.clone(), SdkValue::N(version.ts_ms.to_string()));
        item.insert(names.origin.clone(), SdkValue::S(version.origin.clone()));
        item.remove(&names.sum);
        let core: Item = item
            .iter()
            .map(|(k, v)| (k.clone(), AttributeValue::from(v.clone())))
            .collect();
        item.insert(names.sum.clone(), SdkValue::from(seal_of(&core, names)));
    }

    /// A put item may carry Ferry's attributes (it was read, changed and is put back: Ferry
    /// replaces them), but not the marker: an item with data and the marker is a tombstone that
    /// hides data.
    pub(crate) fn check_put_item(&self, item: &SdkItem) -> Result<(), RequestError> {
        self.check_item_mode()?;
        let marker = &self.config.names.tombstone;
        if item.contains_key(marker) {
            return Err(RequestError::FerryAttribute(marker.clone()));
        }
        Ok(())
    }

    /// The version a put builds on: the caller's, else the one the item carries.
    pub(crate) fn known_for_put(
        &self,
        previous: &Previous,
        item: &SdkItem,
    ) -> Result<Option<Version>, Error> {
        match previous {
            Previous::Unknown => self.version_of(item),
            known => Ok(known.version().cloned()),
        }
    }

    /// The put's condition parts for one attempt.
    pub(crate) fn put_parts(
        &self,
        app: &Parts,
        version: &Version,
        if_absent: bool,
        guarded: bool,
    ) -> Parts {
        let mut parts = app.clone();
        if if_absent {
            parts
                .name(N_PK, &self.config.key.partition)
                .name(N_DELETED, &self.config.names.tombstone)
                .value(V_TRUE, SdkValue::Bool(true));
            parts.and(ABSENT);
        }
        if guarded {
            self.guard_version(&mut parts, version);
        }
        parts
    }

    /// Item-versioned writes only in item mode: in attribute mode the item version would be a
    /// write of the other mode, which Ferry's enqueue refuses (it holds the stream there).
    pub(crate) fn check_item_mode(&self) -> Result<(), RequestError> {
        match self.config.merge_mode {
            ferry_core::MergeMode::Item => Ok(()),
            ferry_core::MergeMode::Attribute => Err(RequestError::NotItemMode),
        }
    }

    /// The key as the core sees it, exactly the table's key attributes.
    pub(crate) fn check_key(&self, key: &SdkItem) -> Result<Item, RequestError> {
        self.check_item_mode()?;
        let schema = &self.config.key;
        for name in schema.names() {
            if !key.contains_key(name) {
                return Err(RequestError::MissingKeyAttribute(name.to_string()));
            }
        }
        if let Some(extra) = key.keys().find(|k| !schema.is_key(k)) {
            return Err(RequestError::NotAKeyAttribute(extra.clone()));
        }
        Ok(key
            .iter()
            .map(|(k, v)| (k.clone(), ferry_core::AttributeValue::from(v.clone())))
            .collect())
    }

    /// A tombstone item at `version`, its TTL from now (ferry-core's definition).
    pub(crate) fn tombstone(&self, key: &Item, version: &Version) -> SdkItem {
        tombstone_item(key, version, self.now_ms(), &self.config)
            .into_iter()
            .map(|(k, v)| (k, SdkValue::from(v)))
            .collect()
    }
}

fn legacy(legacy: &'static str, instead: &'static str) -> Error {
    Error::Request(RequestError::Legacy { legacy, instead })
}

/// The stored item a failed condition returned, if that is what the error is.
fn put_condition_failed(e: &SdkError<PutItemError, HttpResponse>) -> Option<Option<SdkItem>> {
    match e.as_service_error() {
        Some(PutItemError::ConditionalCheckFailedException(c)) => Some(c.item.clone()),
        _ => None,
    }
}

fn update_condition_failed(e: &SdkError<UpdateItemError, HttpResponse>) -> Option<Option<SdkItem>> {
    match e.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(c)) => Some(c.item.clone()),
        _ => None,
    }
}

/// The two options every stamped write takes, the same on [`PutRequest`], [`DeleteRequest`] and
/// [`UpdateRequest`]: `previous` (what the writer knows of the stored item) and `guard` (what a
/// newer stored version does to the write), with `refuse_newer` for the guard that refuses.
/// The arguments are the docs of `previous` and `refuse_newer`.
macro_rules! previous_and_guard {
    ($previous_doc:literal, $refuse_newer_doc:literal) => {
        #[doc = $previous_doc]
        pub fn previous(mut self, previous: impl Into<Previous>) -> Self {
            self.previous = previous.into();
            self
        }

        #[doc = $refuse_newer_doc]
        pub fn refuse_newer(self) -> Self {
            self.guard(Guard::RefuseNewer)
        }

        pub fn guard(mut self, guard: Guard) -> Self {
            self.guard = guard;
            self
        }
    };
}

/// A stamped `PutItem` being prepared. See the [crate docs](crate#how-send-picks-the-version-and-handles-a-failed-condition) for what `send` does.
#[derive(Clone, Debug)]
pub struct PutRequest {
    ferry: Ferry,
    put: PutItemFluentBuilder,
    previous: Previous,
    guard: Guard,
    if_absent: bool,
}

impl PutRequest {
    previous_and_guard!(
        "What the writer knows of the stored item (e.g. the version it read).",
        "Refuse to overwrite a version not older than this write's ([`Guard::RefuseNewer`])."
    );

    /// Create only: the put succeeds when no item or a tombstone is stored (the usual
    /// `attribute_not_exists(pk)` would fail on a deleted key, which reads as absent).
    /// Otherwise [`Error::ConditionFailed`].
    pub fn if_absent(mut self) -> Self {
        self.if_absent = true;
        self
    }

    fn prepare(&self) -> Result<(Parts, SdkItem, Option<Version>), Error> {
        let p = &self.put;
        if p.get_expected().is_some() || p.get_conditional_operator().is_some() {
            return Err(legacy(
                "Expected/ConditionalOperator",
                "ConditionExpression",
            ));
        }
        let item = p
            .get_item()
            .clone()
            .ok_or(RequestError::Missing("the put item"))?;
        self.ferry.check_put_item(&item)?;
        let parts = Parts::from_app(
            p.get_condition_expression().as_ref(),
            p.get_expression_attribute_names().as_ref(),
            p.get_expression_attribute_values().as_ref(),
        )?;
        let known = self.ferry.known_for_put(&self.previous, &item)?;
        let mut item = item;
        self.ferry.strip_ferry_attributes(&mut item);
        Ok((parts, item, known))
    }

    fn request(
        &self,
        app: &Parts,
        item: &SdkItem,
        version: &Version,
        guarded: bool,
    ) -> PutItemFluentBuilder {
        let parts = self.ferry.put_parts(app, version, self.if_absent, guarded);
        let mut item = item.clone();
        self.ferry.stamp_item(&mut item, version);
        with_parts_put(self.put.clone().set_item(Some(item)), parts)
    }

    /// One stamped request for the application to send itself: the version is
    /// `max(now, known + 1)`; with [`Guard::RefuseNewer`] (or [`if_absent`](Self::if_absent)) it
    /// carries the condition, otherwise none (a write below the stored version still replicates
    /// correctly; Ferry then stamps it above, at the cost of one more write).
    pub fn stamped(self) -> Result<Stamped<PutItemFluentBuilder>, Error> {
        let (app, item, known) = self.prepare()?;
        let version = self.ferry.next_version(known.as_ref());
        let request = self.request(&app, &item, &version, self.guard == Guard::RefuseNewer);
        Ok(Stamped { request, version })
    }

    /// Sends the put, above whatever is stored (or refused, with [`Guard::RefuseNewer`]).
    pub async fn send(self) -> Result<Written<PutItemOutput>, Error> {
        let (app, item, known) = self.prepare()?;
        put_loop(&self.ferry, known, self.guard, self.if_absent, |v| {
            self.request(&app, &item, v, true)
        })
        .await
    }
}

/// A tombstone delete being prepared: a `PutItem` of the key, the version, the marker and the TTL.
#[derive(Clone, Debug)]
pub struct DeleteRequest {
    ferry: Ferry,
    put: PutItemFluentBuilder,
    key: SdkItem,
    previous: Previous,
    guard: Guard,
}

impl DeleteRequest {
    previous_and_guard!(
        "What the writer knows of the stored item (e.g. the version it read).",
        "Refuse to delete over a version not older than this delete's ([`Guard::RefuseNewer`])."
    );

    fn prepare(&self) -> Result<(Parts, Item), Error> {
        let p = &self.put;
        if p.get_item().is_some() {
            return Err(RequestError::ItemOnDelete.into());
        }
        if p.get_expected().is_some() || p.get_conditional_operator().is_some() {
            return Err(legacy(
                "Expected/ConditionalOperator",
                "ConditionExpression",
            ));
        }
        let key = self.ferry.check_key(&self.key)?;
        let parts = Parts::from_app(
            p.get_condition_expression().as_ref(),
            p.get_expression_attribute_names().as_ref(),
            p.get_expression_attribute_values().as_ref(),
        )?;
        Ok((parts, key))
    }

    fn request(
        &self,
        app: &Parts,
        key: &Item,
        version: &Version,
        guarded: bool,
    ) -> PutItemFluentBuilder {
        let parts = self.ferry.put_parts(app, version, false, guarded);
        let item = self.ferry.tombstone(key, version);
        with_parts_put(self.put.clone().set_item(Some(item)), parts)
    }

    /// One tombstone request for the application to send itself (see [`PutRequest::stamped`]).
    pub fn stamped(self) -> Result<Stamped<PutItemFluentBuilder>, Error> {
        let (app, key) = self.prepare()?;
        let version = self.ferry.next_version(self.previous.version());
        let request = self.request(&app, &key, &version, self.guard == Guard::RefuseNewer);
        Ok(Stamped { request, version })
    }

    /// Writes the tombstone above whatever is stored (or refused, with [`Guard::RefuseNewer`]).
    /// A key with no item gets a tombstone too: a copy of it may still be on its way from
    /// another region, and the tombstone is what makes that copy lose.
    pub async fn send(self) -> Result<Written<PutItemOutput>, Error> {
        let (app, key) = self.prepare()?;
        let known = self.previous.version().cloned();
        put_loop(&self.ferry, known, self.guard, false, |v| {
            self.request(&app, &key, v, true)
        })
        .await
    }
}

fn with_parts_put(put: PutItemFluentBuilder, parts: Parts) -> PutItemFluentBuilder {
    put.set_expression_attribute_names(parts.names_opt())
        .set_expression_attribute_values(parts.values_opt())
        .set_condition_expression(parts.condition)
}

/// The conditional `PutItem` loop shared by puts and tombstones (see the module docs).
/// A request's answer: the write, at `version`, or the error to judge.
fn written<O, E>(result: Result<O, E>, version: &Version, attempts: u32) -> Result<Written<O>, E> {
    result.map(|output| Written {
        output,
        version: version.clone(),
        attempts,
    })
}

async fn put_loop(
    ferry: &Ferry,
    mut known: Option<Version>,
    guard: Guard,
    if_absent: bool,
    build: impl Fn(&Version) -> PutItemFluentBuilder,
) -> Result<Written<PutItemOutput>, Error> {
    for attempt in 1..=ferry.max_attempts {
        let version = ferry.next_version(known.as_ref());
        let result = build(&version)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let e = match written(result, &version, attempt) {
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        let Some(stored) = put_condition_failed(&e) else {
            return Err(Error::dynamo("PutItem", e));
        };
        if if_absent && stored.as_ref().is_some_and(|s| !ferry.is_tombstone(s)) {
            return Err(Error::ConditionFailed { item: stored });
        }
        match ferry.newer_stored(stored.as_ref(), &version)? {
            // Ferry's part held: the application's own condition failed.
            None => return Err(Error::ConditionFailed { item: stored }),
            Some(newer) => known = Some(above_newer(newer, version, guard, attempt)?),
        }
    }
    Err(Error::Contended {
        attempts: ferry.max_attempts,
    })
}

/// A write's condition found `newer` stored above `version`: refused with
/// [`Guard::RefuseNewer`], otherwise the version the next attempt writes above.
fn above_newer(
    newer: Version,
    version: Version,
    guard: Guard,
    attempt: u32,
) -> Result<Version, Error> {
    if guard == Guard::RefuseNewer {
        return Err(Error::Refused {
            stored: newer,
            attempted: version,
        });
    }
    tracing::debug!(%version, stored = %newer, attempt, "stored version is newer; writing above it");
    Ok(newer)
}

/// The marker (and TTL) a stamped update removes, pinned to the values it saw: UpdateItem cannot
/// remove an attribute only if it holds a value, so the condition says "still these values".
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Revive {
    marker: SdkValue,
    /// The TTL seen (`None`: absent); pinned and removed only on a real tombstone.
    ttl: Option<SdkValue>,
    tombstone: bool,
}

impl Revive {
    /// What the stored item requires, `None` when it holds no marker.
    pub(crate) fn of(ferry: &Ferry, stored: Option<&SdkItem>) -> Option<Revive> {
        let names = &ferry.config.names;
        let stored = stored?;
        let marker = stored.get(&names.tombstone)?.clone();
        let tombstone = ferry.is_tombstone(stored);
        Some(Revive {
            marker,
            // A marker that is not `true` is not a tombstone: its TTL is not the tombstone's.
            ttl: tombstone.then(|| stored.get(&names.ttl).cloned()).flatten(),
            tombstone,
        })
    }

    pub(crate) fn from_previous(previous: &Previous) -> Option<Revive> {
        match previous {
            Previous::Tombstone { ttl, .. } => Some(Revive {
                marker: SdkValue::Bool(true),
                ttl: ttl.clone(),
                tombstone: true,
            }),
            _ => None,
        }
    }

    /// Whether Ferry's marker condition held on the stored item.
    fn held(revive: Option<&Revive>, ferry: &Ferry, stored: Option<&SdkItem>) -> bool {
        let names = &ferry.config.names;
        let marker = stored.and_then(|s| s.get(&names.tombstone));
        match revive {
            None => marker.is_none(),
            Some(r) => {
                marker == Some(&r.marker)
                    && (!r.tombstone || stored.and_then(|s| s.get(&names.ttl)) == r.ttl.as_ref())
            }
        }
    }
}

/// An application update checked and split, ready to be stamped for any version.
#[derive(Clone, Debug)]
pub(crate) struct UpdatePlan {
    app: Parts,
    expression: UpdateExpression,
    /// The application's update sets or removes the TTL attribute itself.
    writes_ttl: bool,
}

impl UpdatePlan {
    pub(crate) fn new(
        ferry: &Ferry,
        expression: Option<&String>,
        app: Parts,
    ) -> Result<Self, Error> {
        ferry.check_item_mode()?;
        let expression = match expression.filter(|e| !e.trim().is_empty()) {
            Some(text) => UpdateExpression::parse(text).map_err(RequestError::UpdateExpression)?,
            None => UpdateExpression::default(),
        };
        let names = &ferry.config.names;
        let targets = expression.targets(&app.names);
        for owned in [
            &names.ts,
            &names.origin,
            &names.tombstone,
            &names.sum,
            &names.versions,
        ] {
            if targets.contains(owned) {
                return Err(RequestError::FerryAttribute(owned.clone()).into());
            }
        }
        Ok(UpdatePlan {
            writes_ttl: targets.contains(&names.ttl),
            app,
            expression,
        })
    }

    /// The update expression and condition parts of one attempt.
    pub(crate) fn render(
        &self,
        ferry: &Ferry,
        version: &Version,
        revive: Option<&Revive>,
        guarded: bool,
    ) -> (String, Parts) {
        let names = &ferry.config.names;
        let mut parts = self.app.clone();
        let mut expression = self.expression.clone();
        ferry.version_placeholders(&mut parts, version);
        expression.append(Clause::Set, STAMP_ACTIONS);
        parts.name(N_DELETED, &names.tombstone);
        let mut remove = Vec::new();
        match revive {
            // Never write data next to a marker: that item would read as absent.
            None => {
                parts.and("attribute_not_exists(#ferry_deleted)");
            }
            Some(r) => {
                parts.value(V_MARKER, r.marker.clone());
                let mut condition = String::from("#ferry_deleted = :ferry_marker");
                remove.push(N_DELETED);
                if r.tombstone {
                    parts.name(N_TTL, &names.ttl);
                    match &r.ttl {
                        Some(ttl) => {
                            parts.value(V_TTL, ttl.clone());
                            condition.push_str(" AND #ferry_ttl = :ferry_ttl");
                            if !self.writes_ttl {
                                remove.push(N_TTL);
                            }
                        }
                        None => condition.push_str(" AND attribute_not_exists(#ferry_ttl)"),
                    }
                }
                parts.and(&condition);
            }
        }
        // The item's content after the update is DynamoDB's to compute: no seal can be written
        // for it, and the stored one would no longer match. Without one, the update's fresh
        // local version is forwarded as it is (crate docs, "Sealing").
        parts.name(N_SUM, &names.sum);
        remove.push(N_SUM);
        expression.append(Clause::Remove, &remove.join(", "));
        if guarded {
            parts.and(VERSION_GUARD);
        }
        (expression.render(), parts)
    }
}

/// A stamped `UpdateItem` being prepared. See the [crate docs](crate#updates-onto-a-deleted-key).
#[derive(Clone, Debug)]
pub struct UpdateRequest {
    ferry: Ferry,
    update: UpdateItemFluentBuilder,
    previous: Previous,
    guard: Guard,
}

impl UpdateRequest {
    previous_and_guard!(
        "What the writer knows of the stored item (e.g. what [`Ferry::read_previous`] returned).",
        "Refuse to overwrite a version not older than this write's ([`Guard::RefuseNewer`])."
    );

    fn prepare(&self) -> Result<UpdatePlan, Error> {
        let u = &self.update;
        if u.get_attribute_updates().is_some() {
            return Err(legacy("AttributeUpdates", "UpdateExpression"));
        }
        if u.get_expected().is_some() || u.get_conditional_operator().is_some() {
            return Err(legacy(
                "Expected/ConditionalOperator",
                "ConditionExpression",
            ));
        }
        if u.get_key().is_none() {
            return Err(RequestError::Missing("the key").into());
        }
        let app = Parts::from_app(
            u.get_condition_expression().as_ref(),
            u.get_expression_attribute_names().as_ref(),
            u.get_expression_attribute_values().as_ref(),
        )?;
        UpdatePlan::new(&self.ferry, u.get_update_expression().as_ref(), app)
    }

    fn request(
        &self,
        plan: &UpdatePlan,
        version: &Version,
        revive: Option<&Revive>,
        guarded: bool,
    ) -> UpdateItemFluentBuilder {
        let (expression, parts) = plan.render(&self.ferry, version, revive, guarded);
        self.update
            .clone()
            .update_expression(expression)
            .set_expression_attribute_names(parts.names_opt())
            .set_expression_attribute_values(parts.values_opt())
            .set_condition_expression(parts.condition)
    }

    /// One stamped request for the application to send itself. It brings a deleted key back
    /// only when [`previous`](Self::previous) says the key holds a tombstone (and which TTL);
    /// otherwise it carries `attribute_not_exists(marker)` and fails with
    /// `ConditionalCheckFailed` on a deleted key, rather than hide the update in a tombstone.
    pub fn stamped(self) -> Result<Stamped<UpdateItemFluentBuilder>, Error> {
        let plan = self.prepare()?;
        let version = self.ferry.next_version(self.previous.version());
        let revive = Revive::from_previous(&self.previous);
        let request = self.request(
            &plan,
            &version,
            revive.as_ref(),
            self.guard == Guard::RefuseNewer,
        );
        Ok(Stamped { request, version })
    }

    /// Sends the update above whatever is stored, bringing a deleted key back (see the crate
    /// docs), or refuses it with [`Guard::RefuseNewer`].
    pub async fn send(self) -> Result<Written<UpdateItemOutput>, Error> {
        let plan = self.prepare()?;
        let ferry = &self.ferry;
        let mut known = self.previous.version().cloned();
        let mut revive = Revive::from_previous(&self.previous);
        for attempt in 1..=ferry.max_attempts {
            let version = ferry.next_version(known.as_ref());
            let result = self
                .request(&plan, &version, revive.as_ref(), true)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let e = match written(result, &version, attempt) {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            let Some(stored) = update_condition_failed(&e) else {
                return Err(Error::dynamo("UpdateItem", e));
            };
            let marker_held = Revive::held(revive.as_ref(), ferry, stored.as_ref());
            match ferry.newer_stored(stored.as_ref(), &version)? {
                None if marker_held => return Err(Error::ConditionFailed { item: stored }),
                None => {}
                Some(newer) => known = Some(above_newer(newer, version, self.guard, attempt)?),
            }
            if !marker_held {
                revive = Revive::of(ferry, stored.as_ref());
                tracing::debug!(attempt, tombstone = ?revive, "the key's marker is not as expected; trying again");
            }
        }
        Err(Error::Contended {
            attempts: ferry.max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Config;
    use std::collections::HashMap;

    fn ferry() -> Ferry {
        Ferry::new(Config::new("us-east-1", "pk")).unwrap()
    }

    fn plan(f: &Ferry, expression: &str, names: &[(&str, &str)]) -> Result<UpdatePlan, Error> {
        let names: HashMap<String, String> = names
            .iter()
            .map(|(p, a)| (p.to_string(), a.to_string()))
            .collect();
        let app = Parts::from_app(None, Some(&names), None)?;
        UpdatePlan::new(f, Some(&expression.to_string()), app)
    }

    #[test]
    fn an_update_removes_the_seal() {
        let f = ferry();
        let v = Version::new(7, "us-east-1");
        let p = plan(&f, "SET a = :a REMOVE b", &[]).unwrap();
        let (expression, parts) = p.render(&f, &v, None, true);
        assert_eq!(
            expression,
            "SET a = :a, #ferry_ts = :ferry_ts, #ferry_origin = :ferry_origin \
             REMOVE b, #ferry_sum"
        );
        assert_eq!(parts.names[N_SUM], "ferry_sum");
        // Bringing a tombstone back: the marker, its TTL and the seal go.
        let revive = Revive::from_previous(&Previous::Tombstone {
            version: None,
            ttl: Some(SdkValue::N("9".into())),
        });
        let (expression, _) =
            plan(&f, "ADD n :one", &[])
                .unwrap()
                .render(&f, &v, revive.as_ref(), false);
        assert_eq!(
            expression,
            "ADD n :one SET #ferry_ts = :ferry_ts, #ferry_origin = :ferry_origin \
             REMOVE #ferry_deleted, #ferry_ttl, #ferry_sum"
        );
    }

    #[test]
    fn an_update_may_not_write_the_seal_or_the_version_map() {
        let f = ferry();
        for (expression, names) in [
            ("SET #s = :s", vec![("#s", "ferry_sum")]),
            ("REMOVE ferry_sum", vec![]),
            ("SET ferry_versions.a = :a", vec![]),
        ] {
            assert!(matches!(
                plan(&f, expression, &names),
                Err(Error::Request(RequestError::FerryAttribute(_)))
            ));
        }
    }
}
