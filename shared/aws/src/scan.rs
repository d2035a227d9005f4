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

/// Where one segment of a parallel scan starts: from its beginning (`None`) or after a key
/// (a checkpoint).
pub type SegmentStart = (i32, Option<Item>);

impl Table {
    /// A parallel scan: the `segments` of `total` run concurrently, each page handed to
    /// `on_page(segment, page)` and awaited before that segment reads on, so a caller that
    /// records `page.next` after handling a page can resume exactly there. Throttled pages are
    /// retried with back-off (`on_throttle` counts them). `on_page` returning `Ok(false)` stops
    /// its segment; the first error stops the scan.
    pub async fn scan_parallel<F, Fut, E>(
        &self,
        total: i32,
        segments: Vec<SegmentStart>,
        limit: Option<i32>,
        on_page: F,
        on_throttle: impl Fn() + Sync,
    ) -> Result<(), E>
    where
        F: Fn(i32, ScanPage) -> Fut + Sync,
        Fut: std::future::Future<Output = Result<bool, E>>,
        E: From<AwsError>,
    {
        let on_page = &on_page;
        let on_throttle = &on_throttle;
        let runs = segments.into_iter().map(|(segment, mut start)| async move {
            loop {
                let from = start.clone();
                let page = crate::retry::while_throttled(
                    || self.scan_page(segment, total, from.clone(), limit),
                    on_throttle,
                )
                .await?;
                let next = page.next.clone();
                if !on_page(segment, page).await? {
                    return Ok(());
                }
                match next {
                    Some(n) => start = Some(n),
                    None => return Ok(()),
                }
            }
        });
        futures::future::try_join_all(runs).await.map(|_| ())
    }
}
