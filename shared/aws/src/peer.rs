//! Publishing this region's shared settings on its table, and reading a destination's
//! (`ferry_core::peer`): tags on the table, so they live with the data they describe, need no
//! other service, and are readable with the same (cross-account) access the drain already has.

use crate::error::{classify_sdk_error, AwsError};
use crate::table::Table;
use aws_sdk_dynamodb::types::Tag;
use ferry_core::peer::{check_peer, is_published, tags, PeerCheck};
use ferry_core::Config;

impl Table {
    /// The table's ARN (`DescribeTable`).
    pub async fn arn(&self) -> Result<String, AwsError> {
        self.describe().await?.arn.ok_or_else(|| AwsError {
            operation: "DescribeTable",
            kind: crate::error::ErrorKind::Other,
            code: None,
            message: format!("table {} has no ARN in its description", self.name),
        })
    }

    /// Every tag on the table (`ListTagsOfResource`, all pages).
    pub async fn tags(&self, arn: &str) -> Result<Vec<(String, String)>, AwsError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .list_tags_of_resource()
                .resource_arn(arn)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify_sdk_error("ListTagsOfResource", &e))?;
            out.extend(
                page.tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string())),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Sets these tags on the table (`TagResource`; other tags are left alone).
    pub async fn tag(&self, arn: &str, tags: &[(String, String)]) -> Result<(), AwsError> {
        let tags = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AwsError {
                operation: "TagResource",
                kind: crate::error::ErrorKind::Invalid,
                code: None,
                message: e.to_string(),
            })?;
        self.client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| classify_sdk_error("TagResource", &e))?;
        Ok(())
    }
}

/// Publishes `config`'s shared settings on the local table; writes only when they differ from
/// what is there. Ok(true) when it wrote.
pub async fn publish_settings(local: &Table, config: &Config) -> Result<bool, AwsError> {
    let arn = local.arn().await?;
    if is_published(config, &local.tags(&arn).await?) {
        return Ok(false);
    }
    local.tag(&arn, &tags(config)).await?;
    Ok(true)
}

/// What the destination table's published settings say about `config` (this region's).
pub async fn check_destination(
    destination: &Table,
    config: &Config,
) -> Result<PeerCheck, AwsError> {
    let arn = destination.arn().await?;
    Ok(check_peer(config, &destination.tags(&arn).await?))
}
