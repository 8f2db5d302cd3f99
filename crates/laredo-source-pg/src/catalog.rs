//! Catalog work on the query connection: table discovery and validation, and keeping the
//! publication in line with the configured tables.
//!
//! Publications: an existing publication is reused and its table list, publish
//! operations, row filters and column lists are set to the configuration on every
//! start (`ALTER PUBLICATION ... SET TABLE`), so tables added to or removed from the
//! config are followed without dropping anything. Row filters and column lists need
//! PostgreSQL 15; asking for them on an older server is an error naming the feature.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use laredo_core::{ColumnDefinition, TableIdentifier, ValidationError};
use tokio_postgres::Client;

/// PostgreSQL 15, the first version with publication row filters and column lists.
const PG15: i32 = 150_000;

/// A catalog or publication failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A query failed.
    #[error("{what}")]
    Query {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The table does not exist (or has no columns).
    #[error("table {0} not found or has no columns")]
    TableNotFound(TableIdentifier),
    /// The publication does not exist and creating it is off.
    #[error("publication {0:?} does not exist and publication.create is false")]
    PublicationMissing(String),
    /// The server is too old for a configured feature.
    #[error("{feature} needs PostgreSQL 15 or later; the server is {server_version}")]
    Unsupported {
        /// The feature (`row filters`, `column lists`).
        feature: &'static str,
        /// `server_version_num`.
        server_version: i32,
    },
}

fn query_error(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> CatalogError {
    let what = what.into();
    move |source| CatalogError::Query { what, source }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn quote_table(table: &TableIdentifier) -> String {
    format!(
        "{}.{}",
        quote_ident(table.schema()),
        quote_ident(table.table())
    )
}

/// The server's `server_version_num` (e.g. 150004).
///
/// # Errors
/// When the query fails.
pub async fn server_version(client: &Client) -> Result<i32, CatalogError> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(query_error("reading server_version_num"))?;
    Ok(row.get(0))
}

/// The columns of `table`, in table order, with primary key ordinals and type OIDs.
///
/// Key ordinals come from the primary key index's `indkey`, an `int2vector` whose
/// subscripts start at 0 (hence the `array_lower` adjustment).
///
/// # Errors
/// [`CatalogError::TableNotFound`] for a missing table; a failed query.
pub async fn discover_columns(
    client: &Client,
    table: &TableIdentifier,
) -> Result<Vec<ColumnDefinition>, CatalogError> {
    let rows = client
        .query(
            "SELECT a.attname::text, t.typname::text, NOT a.attnotnull, pg_get_expr(d.adbin, d.adrelid), \
                    CASE WHEN a.atttypmod > 4 AND t.typname IN ('varchar', 'bpchar') THEN a.atttypmod - 4 ELSE 0 END, \
                    COALESCE(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) + 1, 0)::int4, \
                    a.atttypid::int8 \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&table.schema(), &table.table()],
        )
        .await
        .map_err(query_error(format!("reading the columns of {table}")))?;
    if rows.is_empty() {
        return Err(CatalogError::TableNotFound(table.clone()));
    }
    Ok(rows
        .iter()
        .zip(1u32..)
        .map(|(row, ordinal)| {
            let mut column =
                ColumnDefinition::new(row.get::<_, String>(0), row.get::<_, String>(1))
                    .ordinal(ordinal);
            column.nullable = row.get(2);
            column.default_value = row.get(3);
            column.max_length = u32::try_from(row.get::<_, i32>(4)).unwrap_or(0);
            let key_ordinal = u32::try_from(row.get::<_, i32>(5)).unwrap_or(0);
            if key_ordinal > 0 {
                column = column.primary_key(key_ordinal);
            }
            column.type_oid = u32::try_from(row.get::<_, i64>(6)).unwrap_or(0);
            column
        })
        .collect())
}

/// Checks each table exists and can be read; one [`ValidationError`] per problem.
pub async fn validate_tables(client: &Client, tables: &[TableIdentifier]) -> Vec<ValidationError> {
    let mut problems = Vec::new();
    for table in tables {
        let row = client
            .query_one(
                "SELECT c.oid IS NOT NULL, COALESCE(has_table_privilege(c.oid, 'SELECT'), false), \
                        COALESCE((SELECT r.relreplident::text FROM pg_class r WHERE r.oid = c.oid), 'd'), \
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
                 FROM (SELECT to_regclass($1) AS oid) AS c",
                &[&quote_table(table)],
            )
            .await;
        match row {
            Ok(row) if !row.get::<_, bool>(0) => problems.push(ValidationError::new(
                Some(table.clone()),
                ValidationError::TABLE_NOT_FOUND,
                "table does not exist",
            )),
            Ok(row) if !row.get::<_, bool>(1) => problems.push(ValidationError::new(
                Some(table.clone()),
                ValidationError::PERMISSION_DENIED,
                "no SELECT privilege on the table",
            )),
            Ok(row) => {
                if let Some(warning) =
                    row_identity_warning(table, &row.get::<_, String>(2), row.get::<_, bool>(3))
                {
                    problems.push(warning);
                }
            }
            Err(e) => problems.push(ValidationError::new(
                Some(table.clone()),
                ValidationError::TABLE_NOT_FOUND,
                e.to_string(),
            )),
        }
    }
    problems
}

/// A warning when updates and deletes of `table` cannot be matched to a row by key:
/// replica identity NOTHING, or DEFAULT without a primary key (PG-17). `replident` is
/// `pg_class.relreplident` (`d`, `n`, `f`, `i`).
fn row_identity_warning(
    table: &TableIdentifier,
    replident: &str,
    has_primary_key: bool,
) -> Option<ValidationError> {
    let why = match replident {
        "n" => "REPLICA IDENTITY NOTHING",
        "d" if !has_primary_key => "no primary key and REPLICA IDENTITY DEFAULT",
        _ => return None,
    };
    Some(ValidationError::warning(
        Some(table.clone()),
        ValidationError::NO_ROW_IDENTITY,
        format!(
            "{why}: updates and deletes carry no key, so targets cannot find the row \
             (PostgreSQL also refuses them while the table is published); add a primary \
             key or run ALTER TABLE {} REPLICA IDENTITY FULL",
            quote_table(table)
        ),
    ))
}

/// What the publication must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublicationConfig {
    /// The publication's name.
    pub name: String,
    /// Create it when missing (otherwise a missing publication is an error). Off by
    /// default: creating publications needs privileges an operator may not grant.
    pub create: bool,
    /// Published operations: any of `insert`, `update`, `delete`, `truncate`.
    pub publish: Vec<String>,
    /// Per-table row filters (`WHERE` expressions; PostgreSQL 15+).
    pub row_filters: BTreeMap<TableIdentifier, String>,
    /// Per-table column lists (PostgreSQL 15+).
    pub column_lists: BTreeMap<TableIdentifier, Vec<String>>,
}

impl PublicationConfig {
    /// A publication of every operation, without filters, that must already exist
    /// (see [`PublicationConfig::create_missing`]).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            create: false,
            publish: ["insert", "update", "delete", "truncate"]
                .map(String::from)
                .to_vec(),
            row_filters: BTreeMap::new(),
            column_lists: BTreeMap::new(),
        }
    }

    /// Whether to create the publication when it is missing (and keep its table list,
    /// operations, filters and column lists in step with the configuration).
    #[must_use]
    pub fn create_missing(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
}

/// Makes the publication publish exactly `tables` as configured: creates it (when
/// allowed) or resets its table list, operations, row filters and column lists.
///
/// # Errors
/// A missing publication with `create` off, row filters or column lists on a server
/// older than 15, or a failed statement.
pub async fn sync_publication(
    client: &Client,
    config: &PublicationConfig,
    tables: &[TableIdentifier],
) -> Result<(), CatalogError> {
    let version = server_version(client).await?;
    if !config.row_filters.is_empty() && version < PG15 {
        return Err(CatalogError::Unsupported {
            feature: "publication row filters",
            server_version: version,
        });
    }
    if !config.column_lists.is_empty() && version < PG15 {
        return Err(CatalogError::Unsupported {
            feature: "publication column lists",
            server_version: version,
        });
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&config.name],
        )
        .await
        .map_err(query_error(format!(
            "looking up publication {:?}",
            config.name
        )))?
        .is_some();
    if !exists && !config.create {
        return Err(CatalogError::PublicationMissing(config.name.clone()));
    }
    let mut spec = String::new();
    for (idx, table) in tables.iter().enumerate() {
        if idx > 0 {
            spec.push_str(", ");
        }
        spec.push_str(&quote_table(table));
        if let Some(columns) = config.column_lists.get(table) {
            let columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
            let _ = write!(spec, " ({})", columns.join(", "));
        }
        if let Some(filter) = config.row_filters.get(table) {
            let _ = write!(spec, " WHERE ({filter})");
        }
    }
    let name = quote_ident(&config.name);
    let publish = config.publish.join(", ").replace('\'', "''");
    // A source always has at least one table; an empty list leaves the tables alone.
    let statements = match (exists, tables.is_empty()) {
        (true, true) => format!("ALTER PUBLICATION {name} SET (publish = '{publish}')"),
        (true, false) => format!(
            "ALTER PUBLICATION {name} SET TABLE {spec}; ALTER PUBLICATION {name} SET (publish = '{publish}')"
        ),
        (false, true) => format!("CREATE PUBLICATION {name} WITH (publish = '{publish}')"),
        (false, false) => {
            format!("CREATE PUBLICATION {name} FOR TABLE {spec} WITH (publish = '{publish}')")
        }
    };
    client
        .batch_execute(&statements)
        .await
        .map_err(query_error(format!(
            "setting up publication {:?}",
            config.name
        )))
}

/// The tables a publication publishes, sorted.
///
/// # Errors
/// When the query fails.
pub async fn publication_tables(
    client: &Client,
    name: &str,
) -> Result<Vec<TableIdentifier>, CatalogError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[&name],
        )
        .await
        .map_err(query_error(format!("listing the tables of publication {name:?}")))?;
    Ok(rows
        .iter()
        .map(|r| TableIdentifier::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// Drops the publication if it exists.
///
/// # Errors
/// When the statement fails.
pub async fn drop_publication(client: &Client, name: &str) -> Result<(), CatalogError> {
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name)))
        .await
        .map_err(query_error(format!("dropping publication {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_table(&laredo_core::table("My Schema", "t")),
            "\"My Schema\".\"t\""
        );
    }
    #[test]
    fn tables_without_a_row_identity_are_warned_about() {
        let t = laredo_core::table("public", "t");
        let warned =
            |replident, pk| row_identity_warning(&t, replident, pk).map(|w| (w.code, w.warning));
        let warning = Some((ValidationError::NO_ROW_IDENTITY.to_string(), true));
        assert_eq!(warned("d", false), warning);
        assert_eq!(warned("n", true), warning);
        assert_eq!(warned("d", true), None);
        assert_eq!(warned("f", false), None);
        assert_eq!(warned("i", false), None);
    }
}
