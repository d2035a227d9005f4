//! Writing back an item that was read: a restore of an earlier image, or a copy to another key.
//!
//! An image read from the table carries Ferry's attributes: its version, its seal, and for a
//! tombstone the marker and the tombstone's TTL. Put back as they are, they would make the write
//! look like one of Ferry's own. A byte-identical restore into a key whose delete Ferry has not
//! yet tombstoned would then be taken for an older copy that a drain replayed into the delete's
//! gap, and be deleted again (`docs/contract.md`, "What the seal cannot tell apart"). The helper
//! therefore removes them and stamps and seals the write anew.

use crate::error::{Error, RequestError};
use crate::ferry::Ferry;
use crate::write::PutRequest;
use crate::SdkItem;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;

impl Ferry {
    /// Removes Ferry's attributes from an item that was read: the version (`ts`, `origin`), the
    /// seal (`sum`), the tombstone marker, attribute mode's version map, and the TTL attribute
    /// when the item is a tombstone (its TTL is then the tombstone's; an item's own TTL stays).
    /// What is left is the application's item, ready to be stamped anew.
    ///
    /// [`Ferry::put`], [`Ferry::put_entry`] and [`Ferry::stamp`] do this to the item they write
    /// (after taking the version it carries as the one to go above); [`Ferry::restore`] and
    /// [`Ferry::copy_to`] do it to the image they write back.
    pub fn strip_ferry_attributes(&self, item: &mut SdkItem) {
        let names = &self.config.names;
        if self.is_tombstone(item) {
            item.remove(&names.ttl);
        }
        item.retain(|name, _| name == &names.ttl || !names.is_ferry_attribute(name));
    }

    /// A put that writes back `image`, an item read earlier (a restore, an undo): Ferry's
    /// attributes are removed from it ([`Ferry::strip_ferry_attributes`]) and the put is
    /// stamped and sealed anew, above whatever the key holds now, so it never carries back an
    /// old version. `put` carries the client, the table and optionally the application's own
    /// condition, but no item. A tombstone image (a deleted key) is refused: restore a deletion
    /// with [`Ferry::delete`].
    pub fn restore(&self, put: PutItemFluentBuilder, image: SdkItem) -> Result<PutRequest, Error> {
        let image = self.write_back(&put, image)?;
        Ok(self.put(put.set_item(Some(image))))
    }

    /// A put of a copy of `image` (an item read, under any key) under `key`: the image's key
    /// attributes are replaced by `key` (exactly the table's key attributes) and Ferry's
    /// attributes removed, and the put is stamped and sealed anew, as by [`Ferry::restore`].
    pub fn copy_to(
        &self,
        put: PutItemFluentBuilder,
        image: SdkItem,
        key: SdkItem,
    ) -> Result<PutRequest, Error> {
        self.check_key(&key)?;
        let mut image = self.write_back(&put, image)?;
        image.retain(|name, _| !self.config.key.is_key(name));
        image.extend(key);
        Ok(self.put(put.set_item(Some(image))))
    }

    fn write_back(&self, put: &PutItemFluentBuilder, mut image: SdkItem) -> Result<SdkItem, Error> {
        self.check_item_mode()?;
        if put.get_item().is_some() {
            return Err(RequestError::ItemOnWriteBack.into());
        }
        if self.is_tombstone(&image) {
            return Err(RequestError::TombstoneImage.into());
        }
        self.strip_ferry_attributes(&mut image);
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Previous, SdkValue as V};
    use ferry_core::digest::is_sealed;
    use ferry_core::{AttributeValue, Config, Item, Version};
    use std::sync::Arc;

    fn ferry() -> Ferry {
        Ferry::new(Config::new("us-east-1", "pk"))
            .unwrap()
            .with_clock(Arc::new(|| 5_000))
    }

    fn client() -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .build(),
        )
    }

    fn item(pairs: &[(&str, V)]) -> SdkItem {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    fn core(item: &SdkItem) -> Item {
        item.iter()
            .map(|(k, v)| (k.clone(), AttributeValue::from(v.clone())))
            .collect()
    }

    /// An item as read: a version, a seal, an application TTL, a version map.
    fn read() -> SdkItem {
        item(&[
            ("pk", V::S("a".into())),
            ("status", V::S("paid".into())),
            ("ttl", V::N("99".into())),
            ("ferry_ts", V::N("1000".into())),
            ("ferry_origin", V::S("eu-west-1".into())),
            ("ferry_sum", V::S("v1-0000000000000000".into())),
            ("ferry_versions", V::M(Default::default())),
        ])
    }

    #[test]
    fn strips_ferry_attributes_but_an_items_own_ttl() {
        let f = ferry();
        let mut i = read();
        f.strip_ferry_attributes(&mut i);
        assert_eq!(
            i,
            item(&[
                ("pk", V::S("a".into())),
                ("status", V::S("paid".into())),
                ("ttl", V::N("99".into())),
            ])
        );
        // A tombstone's TTL is the tombstone's: it goes with the marker.
        let mut stone = item(&[
            ("pk", V::S("a".into())),
            ("ttl", V::N("99".into())),
            ("ferry_deleted", V::Bool(true)),
            ("ferry_ts", V::N("1000".into())),
            ("ferry_origin", V::S("eu-west-1".into())),
        ]);
        f.strip_ferry_attributes(&mut stone);
        assert_eq!(stone, item(&[("pk", V::S("a".into()))]));
    }

    #[test]
    fn a_restore_is_stamped_and_sealed_anew() {
        let f = ferry();
        let stamped = f
            .restore(client().put_item().table_name("t"), read())
            .unwrap()
            .stamped()
            .unwrap();
        // The image's version is not carried back: the clock's, not above 1000@eu-west-1.
        assert_eq!(stamped.version, Version::new(5_000, "us-east-1"));
        let written = stamped.request.get_item().clone().unwrap();
        assert_eq!(written["ferry_ts"], V::N("5000".into()));
        assert_eq!(written["ferry_origin"], V::S("us-east-1".into()));
        assert!(!written.contains_key("ferry_versions"));
        assert_eq!(written["ttl"], V::N("99".into()));
        assert_ne!(written["ferry_sum"], read()["ferry_sum"]);
        assert!(is_sealed(&core(&written), &f.config().names));
    }

    #[test]
    fn a_copy_takes_the_new_key() {
        let f = ferry();
        let key = item(&[("pk", V::S("b".into()))]);
        let stamped = f
            .copy_to(client().put_item().table_name("t"), read(), key)
            .unwrap()
            .stamped()
            .unwrap();
        let written = stamped.request.get_item().clone().unwrap();
        assert_eq!(written["pk"], V::S("b".into()));
        assert_eq!(written["status"], V::S("paid".into()));
        assert_eq!(stamped.version, Version::new(5_000, "us-east-1"));
        assert!(is_sealed(&core(&written), &f.config().names));
        // The key must be exactly the table's key.
        let bad = item(&[("pk", V::S("b".into())), ("x", V::S("y".into()))]);
        assert!(matches!(
            f.copy_to(client().put_item().table_name("t"), read(), bad),
            Err(Error::Request(RequestError::NotAKeyAttribute(_)))
        ));
    }

    #[test]
    fn a_tombstone_image_or_a_second_item_is_refused() {
        let f = ferry();
        let mut stone = read();
        stone.insert("ferry_deleted".into(), V::Bool(true));
        assert!(matches!(
            f.restore(client().put_item().table_name("t"), stone),
            Err(Error::Request(RequestError::TombstoneImage))
        ));
        let put = client().put_item().table_name("t").set_item(Some(read()));
        assert!(matches!(
            f.restore(put, read()),
            Err(Error::Request(RequestError::ItemOnWriteBack))
        ));
    }

    #[test]
    fn a_put_of_a_read_item_replaces_its_ferry_attributes() {
        let f = ferry();
        let mut changed = read();
        changed.insert("status".into(), V::S("shipped".into()));
        // Through `put`: above the version the item carries, re-sealed, no version map.
        let stamped = f
            .put(
                client()
                    .put_item()
                    .table_name("t")
                    .set_item(Some(changed.clone())),
            )
            .stamped()
            .unwrap();
        assert_eq!(stamped.version, Version::new(5_000, "us-east-1"));
        let written = stamped.request.get_item().clone().unwrap();
        assert!(!written.contains_key("ferry_versions"));
        assert!(is_sealed(&core(&written), &f.config().names));
        // Through `stamp`, for a batch: the same item.
        let mut batch = changed;
        f.stamp(&mut batch, &Previous::Unknown).unwrap();
        assert_eq!(batch, written);
        // An item carrying a version above the clock: the put goes above it.
        let mut ahead = read();
        ahead.insert("ferry_ts".into(), V::N("9000".into()));
        let v = f.stamp(&mut ahead, &Previous::Unknown).unwrap();
        assert_eq!(v, Version::new(9_001, "us-east-1"));
    }
}
