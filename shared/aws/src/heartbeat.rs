//! The heartbeat writer's one call: an unconditional `PutItem` of this region's sentinel
//! (`ferry_core::heartbeat`) into the local table, where the stream picks it up like any write.

use crate::env::{Env, VariableError};
use crate::error::{classify_sdk_error, AwsError};
use crate::table::Table;
use crate::values::to_sdk;
use ferry_core::heartbeat::{sentinel, KeyType, KeyTypes};
use ferry_core::Config;

/// The table's key types: `FERRY_PARTITION_KEY_TYPE` and `FERRY_SORT_KEY_TYPE` (`S`, `N` or
/// `B`; unset: `S`), as the template's `PartitionKeyType` and `SortKeyType`.
pub fn key_types<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<KeyTypes, VariableError> {
    let read = |name: &'static str| {
        env.parsed(name, "one of S, N, B", |v| KeyType::parse(v).ok())
            .map(Option::unwrap_or_default)
    };
    Ok(KeyTypes {
        partition: read("FERRY_PARTITION_KEY_TYPE")?,
        sort: read("FERRY_SORT_KEY_TYPE")?,
    })
}

/// Writes the local region's sentinel stamped with `now_ms`. Unconditional: only this region's
/// writer ever writes this key here, and a lower clock than the last beat is the stream's to
/// lift like any application write.
pub async fn beat(
    table: &Table,
    config: &Config,
    types: KeyTypes,
    now_ms: u64,
) -> Result<(), AwsError> {
    let item = sentinel(&config.key, types, &config.local_region, now_ms);
    table
        .client
        .put_item()
        .table_name(&table.name)
        .set_item(Some(to_sdk(&item)))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify_sdk_error("PutItem", &e))
}
