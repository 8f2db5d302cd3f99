//! [`OneChange`]: tests that drive a target by hand, one change at a time.

use async_trait::async_trait;
use laredo_core::{Change, Position, Row, SyncTarget, TableIdentifier, TargetError};

/// Applies single changes to a [`SyncTarget`], each as a batch of one (at position 0:
/// see [`OneChange::apply_at`] for a positioned change). For tests that exercise a
/// target's behaviour per change; the engine always hands targets whole batches.
#[async_trait]
pub trait OneChange {
    /// Applies an insert of `row`.
    ///
    /// # Errors
    /// The target's error for the change.
    async fn on_insert(&self, table: &TableIdentifier, row: &Row) -> Result<(), TargetError>;

    /// Applies an update to `row`, with the old row or its identity.
    ///
    /// # Errors
    /// The target's error for the change.
    async fn on_update(
        &self,
        table: &TableIdentifier,
        row: &Row,
        identity: Option<&Row>,
    ) -> Result<(), TargetError>;

    /// Applies a delete of the row identified by `identity`.
    ///
    /// # Errors
    /// The target's error for the change.
    async fn on_delete(&self, table: &TableIdentifier, identity: &Row) -> Result<(), TargetError>;

    /// Applies a truncate.
    ///
    /// # Errors
    /// The target's error for the change.
    async fn on_truncate(&self, table: &TableIdentifier) -> Result<(), TargetError>;

    /// Applies `change` at `position`.
    ///
    /// # Errors
    /// The target's error for the change.
    async fn apply_at(
        &self,
        table: &TableIdentifier,
        change: Change,
        position: Position,
    ) -> Result<(), TargetError>;
}

#[async_trait]
impl<T: SyncTarget + ?Sized> OneChange for T {
    async fn on_insert(&self, table: &TableIdentifier, row: &Row) -> Result<(), TargetError> {
        one(self, table, Change::insert(row.clone())).await
    }

    async fn on_update(
        &self,
        table: &TableIdentifier,
        row: &Row,
        identity: Option<&Row>,
    ) -> Result<(), TargetError> {
        one(self, table, Change::update(row.clone(), identity.cloned())).await
    }

    async fn on_delete(&self, table: &TableIdentifier, identity: &Row) -> Result<(), TargetError> {
        one(self, table, Change::delete(identity.clone())).await
    }

    async fn on_truncate(&self, table: &TableIdentifier) -> Result<(), TargetError> {
        one(self, table, Change::truncate()).await
    }

    async fn apply_at(
        &self,
        table: &TableIdentifier,
        change: Change,
        position: Position,
    ) -> Result<(), TargetError> {
        one(self, table, change.at(position)).await
    }
}

async fn one<T: SyncTarget + ?Sized>(
    target: &T,
    table: &TableIdentifier,
    change: Change,
) -> Result<(), TargetError> {
    target
        .apply(table, std::slice::from_ref(&change))
        .await
        .map_err(|e| e.error)
}
