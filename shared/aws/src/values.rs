//! Conversions between the core's items (`serde_dynamo`) and the SDK's, exact for every type.

use aws_sdk_dynamodb::types::AttributeValue as SdkValue;
use ferry_core::{AttributeValue, Item};
use std::collections::HashMap;

pub type SdkItem = HashMap<String, SdkValue>;

pub fn to_sdk(item: &Item) -> SdkItem {
    item.iter()
        .map(|(k, v)| (k.clone(), SdkValue::from(v.clone())))
        .collect()
}

pub fn into_sdk(item: Item) -> SdkItem {
    item.into_iter()
        .map(|(k, v)| (k, SdkValue::from(v)))
        .collect()
}

pub fn from_sdk(item: SdkItem) -> Item {
    item.into_iter()
        .map(|(k, v)| (k, AttributeValue::from(v)))
        .collect()
}
