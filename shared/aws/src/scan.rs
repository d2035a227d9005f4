//! Reading a whole table: paginated (optionally parallel-segment) scans.

use crate::error::{classify_sdk_error, AwsError};
use crate::table::Table;
use crate::values::{from_sdk, into_sdk};
use ferry_core::Item;

/// One page of a scan and where to continue (`None`: the segment is done).
pub struct ScanPage {
    pub items: Vec<Item>,
    pub next: Option<Item>,
}

impl Table {
    /// One page of segment `segment` of `total` (strongly consistent).
    pub async fn scan_page(
        &self,
        segment: i32,
        total: i32,
        start: Option<Item>,
        limit: Option<i32>,
    ) -> Result<ScanPage, AwsError> {
        let mut req = self
            .client
            .scan()
            .table_name(&self.name)
            .consistent_read(true)
            .set_exclusive_start_key(start.map(into_sdk))
            .set_limit(limit);
        if total > 1 {
            req = req.segment(segment).total_segments(total);
        }
        let out = req
            .send()
            .await
            .map_err(|e| classify_sdk_error("Scan", &e))?;
        Ok(ScanPage {
            items: out
                .items
                .unwrap_or_default()
                .into_iter()
                .map(from_sdk)
                .collect(),
            next: out
                .last_evaluated_key
                .filter(|k| !k.is_empty())
                .map(from_sdk),
        })
    }

    /// Every item of the table.
    pub async fn scan_all(&self) -> Result<Vec<Item>, AwsError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self.scan_page(0, 1, start, None).await?;
            items.extend(page.items);
            match page.next {
                Some(n) => start = Some(n),
                None => return Ok(items),
            }
        }
    }
}
