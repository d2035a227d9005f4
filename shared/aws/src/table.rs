//! A region's DynamoDB table, as Ferry writes it: conditional puts with `ALL_OLD` on failure,
//! version stamps, consistent reads, a cheap liveness check.

use crate::error::{classify_sdk_error, AwsError};
use crate::values::{from_sdk, into_sdk, to_sdk};
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use aws_sdk_dynamodb::Client;
use ferry_core::condition::Expression;
use ferry_core::reconcile::Stamp;
use ferry_core::{Condition, Config, Item};

#[derive(Clone, Debug)]
pub struct Table {
    pub client: Client,
    pub name: String,
}

/// The result of a conditional write.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOutcome {
    Written,
    /// The condition failed; the stored item as DynamoDB returned it (`None`: no item).
    ConditionFailed(Option<Item>),
}

impl Table {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Table {
            client,
            name: name.into(),
        }
    }

    /// `PutItem` under a condition, returning the stored item when the condition fails.
    pub async fn put_if(
        &self,
        item: &Item,
        condition: &Condition,
    ) -> Result<WriteOutcome, AwsError> {
        let expr = condition.to_expression();
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(to_sdk(item)))
            .condition_expression(expr.text)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(non_empty(into_sdk(expr.values)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        write_outcome("PutItem", result)
    }

    /// `UpdateItem` of a stamp (`ferry_core::reconcile::Stamp`): sets only the version, its
    /// seal and a tombstone's moved TTL (and removes what the stamp removes), under its condition.
    pub async fn stamp_if(
        &self,
        key: &Item,
        stamp: &Stamp,
        config: &Config,
    ) -> Result<WriteOutcome, AwsError> {
        let Stamp {
            version,
            remove,
            ttl,
            sum,
            condition,
        } = stamp;
        let mut expr = Expression::default();
        let condition_text = condition.render(&mut expr);
        let ts = expr.name(&config.names.ts);
        let origin = expr.name(&config.names.origin);
        let ts_v = expr.value(&version.ts_value());
        let origin_v = expr.value(&version.origin_value());
        let sum_name = expr.name(&config.names.sum);
        let sum_v = expr.value(sum);
        let mut update = format!("SET {ts} = {ts_v}, {origin} = {origin_v}, {sum_name} = {sum_v}");
        if let Some(ttl) = ttl {
            let name = expr.name(&config.names.ttl);
            let value = expr.value(ttl);
            update.push_str(&format!(", {name} = {value}"));
        }
        if !remove.is_empty() {
            let names: Vec<String> = remove.iter().map(|r| expr.name(r)).collect();
            update.push_str(&format!(" REMOVE {}", names.join(", ")));
        }
        self.update_with(key, update, condition_text, expr).await
    }

    /// `UpdateItem` of `key` with `update` under `condition` (`expr`: the placeholders of both),
    /// returning the stored item when the condition fails. The stamp's and the attribute
    /// merge's ([`Table::update_if`]) write.
    pub(crate) async fn update_with(
        &self,
        key: &Item,
        update: String,
        condition: String,
        expr: Expression,
    ) -> Result<WriteOutcome, AwsError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(to_sdk(key)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(non_empty(into_sdk(expr.values)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        write_outcome("UpdateItem", result)
    }

    /// A strongly consistent read of one item.
    pub async fn get(&self, key: &Item) -> Result<Option<Item>, AwsError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(to_sdk(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetItem", &e))?;
        Ok(out.item.map(from_sdk))
    }

    /// A cheap call that tells whether the table's endpoint answers. A throttled answer is an
    /// answer: the table is up, only busy.
    pub async fn ping(&self) -> Result<(), AwsError> {
        let answer = self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
            .map_err(|e| classify_sdk_error("DescribeTable", &e));
        match answer {
            Err(e) if e.kind != crate::error::ErrorKind::Throttled => Err(e),
            _ => Ok(()),
        }
    }
}

pub(crate) fn non_empty<T>(
    m: std::collections::HashMap<String, T>,
) -> Option<std::collections::HashMap<String, T>> {
    (!m.is_empty()).then_some(m)
}

/// The stored item carried by a failed condition, if that is what the error is.
fn condition_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> Option<Option<Item>>
where
    E: AsConditionalCheckFailed,
{
    e.as_service_error().and_then(|se| se.conditional_item())
}

/// A conditional write's result: written, refused (with the `ALL_OLD` item), or an error.
pub(crate) fn write_outcome<O, E>(
    operation: &'static str,
    result: Result<
        O,
        aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    >,
) -> Result<WriteOutcome, AwsError>
where
    E: AsConditionalCheckFailed
        + aws_sdk_dynamodb::error::ProvideErrorMetadata
        + std::error::Error
        + 'static,
{
    match result {
        Ok(_) => Ok(WriteOutcome::Written),
        Err(e) => condition_failed(&e)
            .ok_or_else(|| classify_sdk_error(operation, &e))
            .map(WriteOutcome::ConditionFailed),
    }
}

/// The two operations' error types both carry the `ALL_OLD` item on a failed condition.
pub(crate) trait AsConditionalCheckFailed {
    fn conditional_item(&self) -> Option<Option<Item>>;
}

impl AsConditionalCheckFailed for aws_sdk_dynamodb::operation::put_item::PutItemError {
    fn conditional_item(&self) -> Option<Option<Item>> {
        match self {
            Self::ConditionalCheckFailedException(c) => Some(c.item.clone().map(from_sdk)),
            _ => None,
        }
    }
}

impl AsConditionalCheckFailed for aws_sdk_dynamodb::operation::update_item::UpdateItemError {
    fn conditional_item(&self) -> Option<Option<Item>> {
        match self {
            Self::ConditionalCheckFailedException(c) => Some(c.item.clone().map(from_sdk)),
            _ => None,
        }
    }
}

/// What `DescribeTable` says about a table, as the operator tools need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableDescription {
    pub partition_key: Option<String>,
    pub sort_key: Option<String>,
    /// `NEW_AND_OLD_IMAGES` etc.; `None` when the stream is off.
    pub stream_view_type: Option<String>,
    /// DynamoDB's approximate item count (updated about every six hours on AWS).
    pub item_count: Option<i64>,
    /// The table's ARN (what tagging calls take).
    pub arn: Option<String>,
}

impl Table {
    /// The key schema, the stream's view type and the approximate item count.
    pub async fn describe(&self) -> Result<TableDescription, AwsError> {
        use aws_sdk_dynamodb::types::KeyType;
        let out = self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
            .map_err(|e| classify_sdk_error("DescribeTable", &e))?;
        let Some(t) = out.table else {
            return Ok(TableDescription::default());
        };
        let key = |kind: KeyType| {
            t.key_schema()
                .iter()
                .find(|k| *k.key_type() == kind)
                .map(|k| k.attribute_name().to_string())
        };
        let stream = t
            .stream_specification()
            .filter(|s| s.stream_enabled())
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str().to_string());
        Ok(TableDescription {
            partition_key: key(KeyType::Hash),
            sort_key: key(KeyType::Range),
            stream_view_type: stream,
            item_count: t.item_count(),
            arn: t.table_arn().map(str::to_string),
        })
    }
}
