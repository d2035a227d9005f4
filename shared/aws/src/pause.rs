//! The pause mark on a pair's buffer (`ferry_core::pause`): read by every drain invocation,
//! set and cleared by `ferry pause` / `ferry resume`.

use crate::buffer::Buffer;
use crate::error::{classify_sdk_error, AwsError};
use ferry_core::pause::{Pause, TAG_PAUSED};

impl Buffer {
    /// The pair's pause, if its buffer carries the mark.
    pub async fn pause(&self) -> Result<Option<Pause>, AwsError> {
        let out = self
            .client
            .list_queue_tags()
            .queue_url(&self.queue_url)
            .send()
            .await
            .map_err(|e| classify_sdk_error("ListQueueTags", &e))?;
        Ok(out
            .tags
            .and_then(|t| t.get(TAG_PAUSED).map(|v| Pause::parse(v))))
    }

    pub async fn set_pause(&self, pause: &Pause) -> Result<(), AwsError> {
        self.client
            .tag_queue()
            .queue_url(&self.queue_url)
            .tags(TAG_PAUSED, pause.tag_value())
            .send()
            .await
            .map_err(|e| classify_sdk_error("TagQueue", &e))?;
        Ok(())
    }

    pub async fn clear_pause(&self) -> Result<(), AwsError> {
        self.client
            .untag_queue()
            .queue_url(&self.queue_url)
            .tag_keys(TAG_PAUSED)
            .send()
            .await
            .map_err(|e| classify_sdk_error("UntagQueue", &e))?;
        Ok(())
    }
}
