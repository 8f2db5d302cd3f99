//! The relation cache: what the stream's relation messages say about each table.
//!
//! pgoutput describes a table (a `Relation` message: OID, name, columns with their
//! type OIDs and key flags) before the first change of it in each session and again
//! after its columns change. [`RelationInfo`] keeps what decoding a tuple needs: the
//! table, whether the source serves it, each column's type OID with domains resolved
//! to their base types (`base_types`, looked up once per OID), and the row layouts of
//! the whole row and of the replica identity key. When a served table's columns differ
//! from what the source knew (from `init` or an earlier relation message), the new
//! columns are read from the catalog and [`ChangeHandler::on_schema_change`] tells the
//! engine.

use std::sync::Arc;

use laredo_core::{ChangeHandler, ColumnDefinition, RowLayout, SourceError, TableIdentifier};
use tokio_postgres::Client;

use super::decoder::Decoder;
use super::{Inner, PgSource};
use crate::pgoutput::Relation;

/// What decoding a tuple of one relation needs.
pub(super) struct RelationInfo {
    /// The table.
    pub(super) table: TableIdentifier,
    /// Whether the source serves the table.
    pub(super) ours: bool,
    /// Each column's type OID, domains resolved to their base types.
    pub(super) oids: Vec<u32>,
    /// The layout of a whole row.
    pub(super) layout: Arc<RowLayout>,
    /// The layout of a replica identity key row.
    pub(super) key_layout: Arc<RowLayout>,
    /// The replica identity key columns' indexes in a whole row.
    pub(super) key_indexes: Vec<usize>,
}

impl Inner {
    /// Resolves domain OIDs among `columns` to their base types.
    pub(super) async fn resolve_domains(
        &self,
        client: &Client,
        columns: &mut [ColumnDefinition],
    ) -> Result<(), SourceError> {
        for column in columns.iter_mut() {
            if column.type_oid < 10_000 {
                continue;
            }
            let known = self.base_types.lock().get(&column.type_oid).copied();
            let base = match known {
                Some(base) => base,
                None => {
                    let row = client
                        .query_one(
                            "WITH RECURSIVE d(oid, base, typtype) AS ( \
                               SELECT oid, typbasetype, typtype FROM pg_type WHERE oid = $1::int8::oid \
                               UNION ALL \
                               SELECT t.oid, t.typbasetype, t.typtype FROM pg_type t JOIN d ON t.oid = d.base \
                             ) SELECT oid::int8 FROM d WHERE typtype <> 'd' LIMIT 1",
                            &[&i64::from(column.type_oid)],
                        )
                        .await;
                    let base = match row {
                        Ok(row) => u32::try_from(row.get::<_, i64>(0)).unwrap_or(column.type_oid),
                        Err(_) => column.type_oid,
                    };
                    self.base_types.lock().insert(column.type_oid, base);
                    base
                }
            };
            column.type_oid = base;
        }
        Ok(())
    }
}

impl PgSource {
    pub(super) async fn on_relation(
        &self,
        relation: Relation,
        decoder: &mut Decoder,
        handler: &mut dyn ChangeHandler,
    ) -> Result<(), SourceError> {
        let inner = &self.inner;
        let namespace = if relation.namespace.is_empty() {
            "pg_catalog"
        } else {
            relation.namespace.as_str()
        };
        let table = TableIdentifier::new(namespace, &relation.name);
        let ours = decoder.tables.contains(&table);
        let mut oids: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
        for oid in &mut oids {
            if *oid >= 10_000
                && let Some(&base) = inner.base_types.lock().get(oid)
            {
                *oid = base;
            }
        }
        if ours {
            let unresolved = oids
                .iter()
                .any(|&o| o >= 10_000 && !inner.base_types.lock().contains_key(&o));
            let known = inner
                .columns
                .lock()
                .get(&table)
                .cloned()
                .unwrap_or_default();
            let same = known.len() == relation.columns.len()
                && known
                    .iter()
                    .zip(&relation.columns)
                    .all(|(k, c)| k.name == c.name);
            let types_same = same
                && known
                    .iter()
                    .zip(&oids)
                    .all(|(k, &o)| k.type_oid == o || o >= 10_000);
            if unresolved || !same || !types_same {
                let client = inner.query_client().await?;
                let mut new_columns = Vec::with_capacity(relation.columns.len());
                for (idx, c) in relation.columns.iter().enumerate() {
                    let type_name: String = client
                        .query_one(
                            "SELECT format_type($1::int8::oid, NULL)",
                            &[&i64::from(c.type_oid)],
                        )
                        .await
                        .map(|r| r.get(0))
                        .unwrap_or_else(|_| format!("oid {}", c.type_oid));
                    let previous = known.iter().find(|k| k.name == c.name);
                    let mut column = ColumnDefinition::new(&c.name, type_name)
                        .ordinal(u32::try_from(idx + 1).unwrap_or(u32::MAX))
                        .oid(c.type_oid);
                    if let Some(previous) = previous {
                        column.nullable = previous.nullable;
                        if previous.primary_key {
                            column = column.primary_key(previous.primary_key_ordinal);
                        }
                        column.default_value.clone_from(&previous.default_value);
                    }
                    new_columns.push(column);
                }
                inner.resolve_domains(&client, &mut new_columns).await?;
                for (oid, column) in oids.iter_mut().zip(&new_columns) {
                    *oid = column.type_oid;
                }
                let changed = !same
                    || known
                        .iter()
                        .zip(&new_columns)
                        .any(|(k, n)| k.type_oid != n.type_oid);
                inner
                    .columns
                    .lock()
                    .insert(table.clone(), new_columns.clone());
                if changed && !known.is_empty() {
                    tracing::info!(%table, "table columns changed");
                    handler
                        .on_schema_change(table.clone(), known, new_columns)
                        .await?;
                }
            }
        }
        let names: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
        let key_indexes: Vec<usize> = relation
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect();
        let key_layout = RowLayout::new(key_indexes.iter().map(|&i| names[i]));
        decoder.relations.insert(
            relation.oid,
            RelationInfo {
                table,
                ours,
                oids,
                layout: RowLayout::new(names),
                key_layout,
                key_indexes,
            },
        );
        Ok(())
    }
}
