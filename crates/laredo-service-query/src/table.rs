//! The queryable tables: one trait over the two in-memory target kinds.
//!
//! An [`IndexedTarget`] answers every read itself. A [`CompiledTarget`] holds the
//! embedding application's objects, which the service cannot read: its registration
//! brings a serializer that turns an object back into a row, and its only index is its
//! key ([`PRIMARY_INDEX`]).
//!
//! Errors are gRPC statuses already, naming the table: this module is the one that
//! knows the fields, indexes and arities the messages talk about.

use std::sync::Arc;

use laredo_core::{ChangeCursor, Engine, Row, TableIdentifier, Value, primary_key_columns};
use laredo_proto::laredo::v1 as wire;
use laredo_target_memory::{CompiledTarget, IndexError, IndexedTarget, PRIMARY_INDEX};
use tonic::Status;

use crate::subscription::{Producer, Queue, SubscribeStream, SubscriberGuard, Subscription};

/// Turns a compiled target's object into the row the service sends.
pub(crate) type Serializer<T> = Arc<dyn Fn(&T) -> Row + Send + Sync>;

/// The reads the Query service makes of one table.
pub(crate) trait QueryTable: Send + Sync {
    /// The columns identifying a row (`GetRow`'s key, `ListRows`' order).
    ///
    /// # Errors
    /// `UNAVAILABLE` while the target is not initialised.
    fn key_fields(&self) -> Result<Vec<String>, Status>;

    /// The row of `key` in the lookup index (`index` `None`) or the first row of `key`
    /// in the named index.
    fn lookup(&self, index: Option<&str>, key: Vec<Value>) -> Result<Option<Row>, Status>;

    /// Every row of `key` in the named index.
    fn lookup_all(&self, index: &str, key: Vec<Value>) -> Result<Vec<Row>, Status>;

    /// The row whose key ([`QueryTable::key_fields`]) is `key`.
    fn get(&self, key: Vec<Value>) -> Result<Option<Row>, Status>;

    /// Every row (order unspecified).
    fn rows(&self) -> Vec<Row>;

    /// Up to `limit` rows in key order (see `page`) whose key is after `after`, or
    /// `None` when the table has no ordered index (the caller then selects the page
    /// from [`QueryTable::rows`]).
    fn rows_in_key_order(&self, _after: Option<&[Value]>, _limit: usize) -> Option<Vec<Row>> {
        None
    }

    /// The number of rows.
    fn count(&self) -> u64;

    /// The engine's cursor of the pipeline writing this table's target (which source
    /// change it is applying); `None` when the engine does not run the target.
    fn change_cursor(&self, engine: &Engine) -> Option<ChangeCursor>;

    /// A change stream: registers a listener, then (with `replay`) reads the current
    /// rows, so a change made meanwhile is sent after them. Changes carry the source
    /// position and transaction id that `cursor` reports.
    fn subscribe(
        &self,
        replay: bool,
        capacity: usize,
        guard: SubscriberGuard,
        cursor: Option<ChangeCursor>,
    ) -> SubscribeStream;
}

/// `INVALID_ARGUMENT` unless `key` has one value per field.
fn check_arity(
    what: &str,
    table: &TableIdentifier,
    fields: &[String],
    key: &[Value],
) -> Result<(), Status> {
    if fields.len() == key.len() {
        return Ok(());
    }
    let plural = if fields.len() == 1 { "" } else { "s" };
    Err(Status::invalid_argument(format!(
        "{what} of {table}: expected {} value{plural} ({}), got {}",
        fields.len(),
        fields.join(", "),
        key.len()
    )))
}

fn not_initialised(table: &TableIdentifier) -> Status {
    Status::unavailable(format!("the target of {table} is not initialised yet"))
}

fn unknown_index(table: &TableIdentifier, index: &str, known: &[String]) -> Status {
    Status::not_found(format!(
        "index {index:?} not found on {table}; known indexes: {}",
        known.join(", ")
    ))
}

/// An [`IndexedTarget`] serving `table`.
pub(crate) struct IndexedTable {
    table: TableIdentifier,
    target: Arc<IndexedTarget>,
}

impl IndexedTable {
    pub(crate) fn new(table: TableIdentifier, target: Arc<IndexedTarget>) -> Self {
        Self { table, target }
    }

    /// The named index's fields, or `NOT_FOUND` listing the known indexes.
    fn index_fields(&self, index: &str) -> Result<Vec<String>, Status> {
        let indexes = self.target.indexes();
        match indexes.iter().find(|info| info.name == index) {
            Some(info) => Ok(info.fields.clone()),
            None => {
                let known: Vec<String> = indexes.into_iter().map(|info| info.name).collect();
                Err(unknown_index(&self.table, index, &known))
            }
        }
    }

    fn find(&self, index: &str, key: Vec<Value>) -> Result<Vec<Row>, Status> {
        let fields = self.index_fields(index)?;
        if fields.is_empty() {
            return Err(not_initialised(&self.table));
        }
        check_arity(&format!("index {index:?}"), &self.table, &fields, &key)?;
        self.target
            .lookup_all(index, key)
            .map_err(|error| match error {
                // The index set is fixed at build time and the arity was checked: these
                // only happen if the target changed in between, reported as it says.
                IndexError::UnknownIndex(_) => unknown_index(&self.table, index, &[]),
                other => Status::invalid_argument(format!("{}: {other}", self.table)),
            })
    }
}

impl QueryTable for IndexedTable {
    fn key_fields(&self) -> Result<Vec<String>, Status> {
        // As the target keys its rows: the primary key, else the lookup fields.
        let columns = self.target.columns();
        let primary: Vec<String> = primary_key_columns(&columns)
            .into_iter()
            .map(str::to_string)
            .collect();
        let fields = if primary.is_empty() && !columns.is_empty() {
            self.target.lookup_fields()
        } else {
            primary
        };
        if fields.is_empty() {
            return Err(not_initialised(&self.table));
        }
        Ok(fields)
    }

    fn lookup(&self, index: Option<&str>, key: Vec<Value>) -> Result<Option<Row>, Status> {
        let Some(index) = index else {
            let fields = self.target.lookup_fields();
            if fields.is_empty() {
                return Err(not_initialised(&self.table));
            }
            check_arity("lookup key", &self.table, &fields, &key)?;
            return Ok(self.target.lookup(key));
        };
        Ok(self.find(index, key)?.into_iter().next())
    }

    fn lookup_all(&self, index: &str, key: Vec<Value>) -> Result<Vec<Row>, Status> {
        self.find(index, key)
    }

    fn get(&self, key: Vec<Value>) -> Result<Option<Row>, Status> {
        let fields = self.key_fields()?;
        check_arity("primary key", &self.table, &fields, &key)?;
        Ok(self.target.get(key))
    }

    fn rows(&self) -> Vec<Row> {
        self.target.all()
    }

    fn rows_in_key_order(&self, after: Option<&[Value]>, limit: usize) -> Option<Vec<Row>> {
        Some(self.target.rows_in_key_order(after, limit))
    }

    fn count(&self) -> u64 {
        self.target.count() as u64
    }

    fn change_cursor(&self, engine: &Engine) -> Option<ChangeCursor> {
        engine.change_cursor(self.target.as_ref())
    }

    fn subscribe(
        &self,
        replay: bool,
        capacity: usize,
        guard: SubscriberGuard,
        cursor: Option<ChangeCursor>,
    ) -> SubscribeStream {
        let queue = Queue::new(capacity);
        let producer = Producer::new(&queue, cursor.clone(), guard);
        let listener = self
            .target
            .listen(move |old: Option<&Row>, new: Option<&Row>| {
                producer.push(old.cloned(), new.cloned());
            });
        let existing = replay.then(|| self.target.all());
        let convert = |row: &Row| wire::Row::from(row);
        Subscription::new(existing, queue, convert, cursor, listener).boxed()
    }
}

/// A [`CompiledTarget`] serving `table` through a serializer.
pub(crate) struct CompiledTable<T> {
    table: TableIdentifier,
    target: Arc<CompiledTarget<T>>,
    serializer: Serializer<T>,
}

impl<T: Send + Sync + 'static> CompiledTable<T> {
    pub(crate) fn new(
        table: TableIdentifier,
        target: Arc<CompiledTarget<T>>,
        serializer: Serializer<T>,
    ) -> Self {
        Self {
            table,
            target,
            serializer,
        }
    }

    fn by_key(&self, what: &str, key: Vec<Value>) -> Result<Option<Row>, Status> {
        let fields = self.key_fields()?;
        check_arity(what, &self.table, &fields, &key)?;
        Ok(self
            .target
            .get(key)
            .map(|object| (self.serializer)(&object)))
    }

    fn check_index(&self, index: &str) -> Result<(), Status> {
        if index == PRIMARY_INDEX {
            Ok(())
        } else {
            Err(unknown_index(
                &self.table,
                index,
                &[PRIMARY_INDEX.to_string()],
            ))
        }
    }
}

impl<T: Send + Sync + 'static> QueryTable for CompiledTable<T> {
    fn key_fields(&self) -> Result<Vec<String>, Status> {
        let fields = self.target.key_fields();
        if fields.is_empty() {
            return Err(not_initialised(&self.table));
        }
        Ok(fields)
    }

    fn lookup(&self, index: Option<&str>, key: Vec<Value>) -> Result<Option<Row>, Status> {
        match index {
            None => self.by_key("lookup key", key),
            Some(index) => {
                self.check_index(index)?;
                self.by_key(&format!("index {index:?}"), key)
            }
        }
    }

    fn lookup_all(&self, index: &str, key: Vec<Value>) -> Result<Vec<Row>, Status> {
        self.check_index(index)?;
        Ok(self
            .by_key(&format!("index {index:?}"), key)?
            .into_iter()
            .collect())
    }

    fn get(&self, key: Vec<Value>) -> Result<Option<Row>, Status> {
        self.by_key("primary key", key)
    }

    fn rows(&self) -> Vec<Row> {
        self.target
            .all()
            .iter()
            .map(|object| (self.serializer)(object))
            .collect()
    }

    fn count(&self) -> u64 {
        self.target.count() as u64
    }

    fn change_cursor(&self, engine: &Engine) -> Option<ChangeCursor> {
        engine.change_cursor(self.target.as_ref())
    }

    fn subscribe(
        &self,
        replay: bool,
        capacity: usize,
        guard: SubscriberGuard,
        cursor: Option<ChangeCursor>,
    ) -> SubscribeStream {
        let queue = Queue::new(capacity);
        let producer = Producer::new(&queue, cursor.clone(), guard);
        // Objects are queued as they are (an `Arc` clone) and serialized by the
        // stream, off the pipeline's task.
        let listener = self
            .target
            .listen(move |old: Option<&Arc<T>>, new: Option<&Arc<T>>| {
                producer.push(old.cloned(), new.cloned());
            });
        let existing = replay.then(|| self.target.all());
        let serializer = Arc::clone(&self.serializer);
        let convert = move |object: &Arc<T>| wire::Row::from(&serializer(object));
        Subscription::new(existing, queue, convert, cursor, listener).boxed()
    }
}
