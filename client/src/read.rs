//! Reads that treat a tombstone as absent, as every Ferry reader does.

use crate::error::{Error, RequestError};
use crate::expr::{split_top_level, top_attribute, Parts, N_DELETED, N_ORIGIN, N_PK, N_TS, N_TTL};
use crate::ferry::{Ferry, Previous};
use crate::SdkItem;
use aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;
use std::collections::HashMap;

const NOT_TOMBSTONE: &str = "attribute_not_exists(#ferry_deleted)";

/// A filter expression with its name placeholders, to compose into a request by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub expression: String,
    pub names: HashMap<String, String>,
}

impl Ferry {
    /// `GetItem`, with a tombstone read as no item. The application's request stays as it is
    /// (consistency, projection, ...); when it projects, Ferry adds the marker to the projection
    /// (it must see it to tell) and takes it out of the answer again.
    pub async fn get(&self, get: GetItemFluentBuilder) -> Result<Option<SdkItem>, Error> {
        let marker = &self.config.names.tombstone;
        let (get, added) = self.project_marker(get)?;
        let out = get.send().await.map_err(|e| Error::dynamo("GetItem", e))?;
        Ok(out.item.filter(|i| !self.is_tombstone(i)).map(|mut i| {
            if added {
                i.remove(marker);
            }
            i
        }))
    }

    fn project_marker(
        &self,
        get: GetItemFluentBuilder,
    ) -> Result<(GetItemFluentBuilder, bool), Error> {
        let marker = &self.config.names.tombstone;
        if let Some(attributes) = get.get_attributes_to_get() {
            if attributes.contains(marker) {
                return Ok((get, false));
            }
            let mut attributes = attributes.clone();
            attributes.push(marker.clone());
            return Ok((get.set_attributes_to_get(Some(attributes)), true));
        }
        let Some(projection) = get.get_projection_expression().clone() else {
            return Ok((get, false));
        };
        let parts = Parts::from_app(None, get.get_expression_attribute_names().as_ref(), None)?;
        let paths = split_top_level(&projection, ',');
        if paths.iter().any(|p| p.is_empty()) {
            return Err(RequestError::ProjectionExpression(projection).into());
        }
        if paths
            .iter()
            .any(|p| top_attribute(p, &parts.names).as_ref() == Some(marker))
        {
            return Ok((get, false));
        }
        let mut parts = parts;
        parts.name(N_DELETED, marker);
        Ok((
            get.projection_expression(format!("{projection}, {N_DELETED}"))
                .set_expression_attribute_names(parts.names_opt()),
            true,
        ))
    }

    /// A strongly consistent read of what a write needs to know of the key (its version, and
    /// whether it is a tombstone and with which TTL), for [`PutRequest::previous`] and the
    /// transaction entries. Reads only Ferry's attributes and the partition key, whatever the
    /// request projected.
    ///
    /// [`PutRequest::previous`]: crate::PutRequest::previous
    pub async fn read_previous(&self, get: GetItemFluentBuilder) -> Result<Previous, Error> {
        let names = &self.config.names;
        let projection: HashMap<String, String> = [
            (N_PK, &self.config.key.partition),
            (N_TS, &names.ts),
            (N_ORIGIN, &names.origin),
            (N_DELETED, &names.tombstone),
            (N_TTL, &names.ttl),
        ]
        .into_iter()
        .map(|(p, a)| (p.to_string(), a.clone()))
        .collect();
        let out = get
            .set_attributes_to_get(None)
            .projection_expression(format!("{N_PK}, {N_TS}, {N_ORIGIN}, {N_DELETED}, {N_TTL}"))
            .set_expression_attribute_names(Some(projection))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::dynamo("GetItem", e))?;
        self.previous_of(out.item.as_ref())
    }

    /// The filter that drops tombstones on the server: `attribute_not_exists(#ferry_deleted)`.
    pub fn tombstone_filter(&self) -> Filter {
        Filter {
            expression: NOT_TOMBSTONE.to_string(),
            names: [(N_DELETED.to_string(), self.config.names.tombstone.clone())].into(),
        }
    }

    /// The query with tombstones filtered out on the server, ANDed with the application's own
    /// filter. Pages (and counts) then hold no tombstone; like every filter, it still reads
    /// them, so a page can come back short or empty with a `LastEvaluatedKey`.
    pub fn hide_tombstones_in_query(
        &self,
        query: QueryFluentBuilder,
    ) -> Result<QueryFluentBuilder, Error> {
        if query.get_query_filter().is_some() || query.get_conditional_operator().is_some() {
            return Err(legacy(
                "QueryFilter/ConditionalOperator",
                "FilterExpression",
            ));
        }
        if query.get_key_conditions().is_some() {
            return Err(legacy("KeyConditions", "KeyConditionExpression"));
        }
        if query.get_attributes_to_get().is_some() {
            return Err(legacy("AttributesToGet", "ProjectionExpression"));
        }
        let parts = self.with_filter(
            query.get_filter_expression().as_ref(),
            query.get_expression_attribute_names().as_ref(),
        )?;
        Ok(query
            .set_expression_attribute_names(parts.names_opt())
            .set_filter_expression(parts.condition))
    }

    /// The scan with tombstones filtered out on the server (see
    /// [`hide_tombstones_in_query`](Self::hide_tombstones_in_query)).
    pub fn hide_tombstones_in_scan(
        &self,
        scan: ScanFluentBuilder,
    ) -> Result<ScanFluentBuilder, Error> {
        if scan.get_scan_filter().is_some() || scan.get_conditional_operator().is_some() {
            return Err(legacy("ScanFilter/ConditionalOperator", "FilterExpression"));
        }
        if scan.get_attributes_to_get().is_some() {
            return Err(legacy("AttributesToGet", "ProjectionExpression"));
        }
        let parts = self.with_filter(
            scan.get_filter_expression().as_ref(),
            scan.get_expression_attribute_names().as_ref(),
        )?;
        Ok(scan
            .set_expression_attribute_names(parts.names_opt())
            .set_filter_expression(parts.condition))
    }

    fn with_filter(
        &self,
        filter: Option<&String>,
        names: Option<&HashMap<String, String>>,
    ) -> Result<Parts, Error> {
        // Ferry's filter adds no value placeholder, so the application's values stay as they are.
        let mut parts = Parts::from_app(filter, names, None)?;
        parts.name(N_DELETED, &self.config.names.tombstone);
        parts.and(NOT_TOMBSTONE);
        Ok(parts)
    }

    /// The items of a page that are not tombstones (for pages read without the server filter).
    /// The items must include the marker attribute: with a projection, filter on the server.
    pub fn visible(&self, mut items: Vec<SdkItem>) -> Vec<SdkItem> {
        self.retain_visible(&mut items);
        items
    }

    /// Drops the tombstones from a page in place.
    pub fn retain_visible(&self, items: &mut Vec<SdkItem>) {
        items.retain(|i| !self.is_tombstone(i));
    }
}

fn legacy(legacy: &'static str, instead: &'static str) -> Error {
    Error::Request(RequestError::Legacy { legacy, instead })
}
