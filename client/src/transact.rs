//! Stamped `TransactWriteItems` entries.
//!
//! See the crate docs (lib.rs), "Transactions".

use crate::error::{Error, RequestError};
use crate::expr::Parts;
use crate::ferry::{Ferry, Previous};
use crate::write::{Guard, Revive, Stamped, UpdatePlan};
use crate::SdkItem;
use aws_sdk_dynamodb::types::{
    Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

impl Ferry {
    /// A `Put` entry with a fresh version; with [`Guard::RefuseNewer`] it carries the version
    /// condition too (the transaction is cancelled rather than overwrite a newer version).
    pub fn put_entry(
        &self,
        mut put: Put,
        previous: &Previous,
        guard: Guard,
    ) -> Result<Stamped<TransactWriteItem>, Error> {
        self.check_put_item(&put.item)?;
        let app = Parts::from_app(
            put.condition_expression.as_ref(),
            put.expression_attribute_names.as_ref(),
            put.expression_attribute_values.as_ref(),
        )?;
        let known = self.known_for_put(previous, &put.item)?;
        self.strip_ferry_attributes(&mut put.item);
        let version = self.next_version(known.as_ref());
        self.stamp_item(&mut put.item, &version);
        let parts = self.put_parts(&app, &version, false, guard == Guard::RefuseNewer);
        put.expression_attribute_names = parts.names_opt();
        put.expression_attribute_values = parts.values_opt();
        put.condition_expression = parts.condition;
        all_old(&mut put.return_values_on_condition_check_failure);
        Ok(Stamped {
            request: TransactWriteItem::builder().put(put).build(),
            version,
        })
    }

    /// An `Update` entry with a fresh version (see the [crate docs](crate#transactions) for a deleted key).
    pub fn update_entry(
        &self,
        mut update: Update,
        previous: &Previous,
        guard: Guard,
    ) -> Result<Stamped<TransactWriteItem>, Error> {
        let app = Parts::from_app(
            update.condition_expression.as_ref(),
            update.expression_attribute_names.as_ref(),
            update.expression_attribute_values.as_ref(),
        )?;
        let plan = UpdatePlan::new(self, Some(&update.update_expression), app)?;
        let version = self.next_version(previous.version());
        let revive = Revive::from_previous(previous);
        let (expression, parts) =
            plan.render(self, &version, revive.as_ref(), guard == Guard::RefuseNewer);
        update.update_expression = expression;
        update.expression_attribute_names = parts.names_opt();
        update.expression_attribute_values = parts.values_opt();
        update.condition_expression = parts.condition;
        all_old(&mut update.return_values_on_condition_check_failure);
        Ok(Stamped {
            request: TransactWriteItem::builder().update(update).build(),
            version,
        })
    }

    /// A tombstone `Put` entry for `key` in `table` (a transactional delete).
    pub fn tombstone_entry(
        &self,
        table: impl Into<String>,
        key: &SdkItem,
        previous: &Previous,
        guard: Guard,
    ) -> Result<Stamped<TransactWriteItem>, Error> {
        let key = self.check_key(key)?;
        let version = self.next_version(previous.version());
        let parts = self.put_parts(
            &Parts::default(),
            &version,
            false,
            guard == Guard::RefuseNewer,
        );
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(self.tombstone(&key, &version)))
            .set_condition_expression(parts.condition.clone())
            .set_expression_attribute_names(parts.names_opt())
            .set_expression_attribute_values(parts.values_opt())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|_| RequestError::Missing("the table name"))?;
        Ok(Stamped {
            request: TransactWriteItem::builder().put(put).build(),
            version,
        })
    }

    /// Stamps any entry of a transaction: `Put` and `Update` as above, a `ConditionCheck` passes
    /// unchanged (its version is `None`), a hard `Delete` is refused.
    pub fn stamp_entry(
        &self,
        entry: TransactWriteItem,
        previous: &Previous,
        guard: Guard,
    ) -> Result<(TransactWriteItem, Option<crate::Version>), Error> {
        self.check_item_mode()?;
        if entry.delete.is_some() {
            return Err(RequestError::HardDelete.into());
        }
        if let Some(put) = entry.put {
            let s = self.put_entry(put, previous, guard)?;
            return Ok((s.request, Some(s.version)));
        }
        if let Some(update) = entry.update {
            let s = self.update_entry(update, previous, guard)?;
            return Ok((s.request, Some(s.version)));
        }
        if entry.condition_check.is_some() {
            return Ok((entry, None));
        }
        Err(RequestError::EmptyEntry.into())
    }
}

/// A cancelled transaction then says what each entry met, for the caller's next attempt.
fn all_old(choice: &mut Option<ReturnValuesOnConditionCheckFailure>) {
    if choice.is_none() {
        *choice = Some(ReturnValuesOnConditionCheckFailure::AllOld);
    }
}
