//! [`CompiledRows`]: a compiled target's objects read as rows, for readers that do not
//! know the object type (the Query service).
//!
//! A [`CompiledTarget`] holds the application's own types; only the application can
//! turn one back into a row. [`CompiledTarget::serialized`] pairs the target with that
//! serializer, and the pair is a [`RowAccess`]: every read serializes the objects it
//! returns, and a subscription serializes each changed object in the listener, on the
//! pipeline's task (so a slow serializer slows the pipeline while someone subscribes).
//! Its one index is the key ([`PRIMARY_INDEX`]).

use std::sync::Arc;

use laredo_core::{
    IndexError, IndexInfo, ListenerHandle, PRIMARY_INDEX, Row, RowAccess, RowChange, RowListener,
    Value,
};

use crate::compiled::CompiledTarget;

/// Turns an object back into the row readers see.
type Serializer<T> = dyn Fn(&T) -> Row + Send + Sync;

/// A [`CompiledTarget`]'s objects as rows, through the application's serializer; made
/// by [`CompiledTarget::serialized`].
///
/// Reads: [`RowAccess::get`] and [`RowAccess::lookup`] by the key
/// ([`PRIMARY_INDEX`]), [`RowAccess::scan`], [`RowAccess::count`], and
/// [`RowAccess::subscribe`]. Rows are ordered for paging by the key fields' values in
/// the serialized rows, so the serializer should include the key columns.
pub struct CompiledRows<T> {
    target: Arc<CompiledTarget<T>>,
    serializer: Arc<Serializer<T>>,
}

impl<T> std::fmt::Debug for CompiledRows<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledRows")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> CompiledTarget<T> {
    /// This target's objects as the rows `serializer` makes of them: a [`RowAccess`]
    /// to register with a reader that cannot know `T`, such as the Query service
    /// (`QueryService::with_rows`).
    ///
    /// ```
    /// use laredo_core::{Row, RowAccess, row};
    /// use laredo_target_memory::CompiledTarget;
    ///
    /// struct User { id: i64 }
    /// let users = CompiledTarget::builder(|row: &Row| -> Result<User, String> {
    ///     Ok(User { id: row.get_i64("id").ok_or("no id")? })
    /// })
    /// .build();
    /// let rows = users.serialized(|user: &User| row! {"id" => user.id});
    /// assert_eq!(rows.count(), 0);
    /// ```
    pub fn serialized(
        self: &Arc<Self>,
        serializer: impl Fn(&T) -> Row + Send + Sync + 'static,
    ) -> Arc<CompiledRows<T>> {
        Arc::new(CompiledRows {
            target: Arc::clone(self),
            serializer: Arc::new(serializer),
        })
    }
}

impl<T: Send + Sync + 'static> CompiledRows<T> {
    /// The serialized object of `key`, when `key` has one value per key field.
    fn by_key(&self, key: &[Value]) -> Option<Row> {
        self.target
            .get(key)
            .map(|object| (self.serializer)(&object))
    }
}

impl<T: Send + Sync + 'static> RowAccess for CompiledRows<T> {
    /// The serialized object whose key equals `identity`'s key columns.
    fn get(&self, identity: &Row) -> Option<Row> {
        let key: Option<Vec<Value>> = self
            .target
            .key_fields()
            .iter()
            .map(|field| identity.get(field).cloned())
            .collect();
        self.by_key(&key?)
    }

    fn count(&self) -> u64 {
        self.target.count() as u64
    }

    /// Every object, serialized.
    fn scan(&self) -> Vec<Row> {
        self.target
            .all()
            .iter()
            .map(|object| (self.serializer)(object))
            .collect()
    }

    fn key_fields(&self) -> Vec<String> {
        self.target.key_fields()
    }

    /// The key, as [`PRIMARY_INDEX`]: a compiled target has no other index.
    fn indexes(&self) -> Vec<IndexInfo> {
        vec![IndexInfo::new(
            PRIMARY_INDEX,
            self.target.key_fields(),
            true,
            self.target.count(),
        )]
    }

    fn lookup(&self, index: &str, key: &[Value]) -> Result<Vec<Row>, IndexError> {
        if index != PRIMARY_INDEX {
            return Err(IndexError::UnknownIndex(index.to_string()));
        }
        let expected = self.target.key_fields().len();
        if key.len() != expected {
            return Err(IndexError::KeyArity {
                index: index.to_string(),
                expected,
                got: key.len(),
            });
        }
        Ok(self.by_key(key).into_iter().collect())
    }

    /// Serializes each changed object in the listener (on the pipeline's task).
    fn subscribe(&self, listener: Arc<RowListener>) -> Option<ListenerHandle> {
        let serializer = Arc::clone(&self.serializer);
        Some(self.target.listen_changes(move |old, new, change| {
            let old = old.map(|object| serializer(object));
            let new = new.map(|object| serializer(object));
            listener(&RowChange::new(old.as_ref(), new.as_ref(), change));
        }))
    }
}
