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
    /// A publication laredo may not change lacks tables or operations it needs.
    #[error(
        "publication {name:?} {}; laredo never alters a publication it did not create: \
         add them (ALTER PUBLICATION), or let laredo manage it with publication.create = \
         true and publication.adopt_existing = true",
        describe_missing(missing_tables, missing_operations)
    )]
    PublicationIncomplete {
        /// The publication.
        name: String,
        /// Configured tables it does not publish.
        missing_tables: Vec<TableIdentifier>,
        /// Configured operations it does not publish.
        missing_operations: Vec<String>,
    },
    /// Row filters or column lists are configured for a publication laredo may not
    /// change.
    #[error(
        "publication {0:?}: row filters and column lists (publication.tables) are set by \
         laredo only on a publication it manages (publication.create = true, and \
         adopt_existing = true for one it did not create); set them on the publication \
         yourself and remove them from the configuration"
    )]
    FiltersNeedManagedPublication(String),
    /// The server is too old for a configured feature.
    #[error("{feature} needs PostgreSQL 15 or later; the server is {server_version}")]
    Unsupported {
        /// The feature (`row filters`, `column lists`).
        feature: &'static str,
        /// `server_version_num`.
        server_version: i32,
    },
}

fn describe_missing(tables: &[TableIdentifier], operations: &[String]) -> String {
    let tables: Vec<String> = tables.iter().map(ToString::to_string).collect();
    match (tables.is_empty(), operations.is_empty()) {
        (false, false) => format!(
            "does not publish the tables {} nor the operations {}",
            tables.join(", "),
            operations.join(", ")
        ),
        (false, true) => format!("does not publish the tables {}", tables.join(", ")),
        (true, false) => format!("does not publish the operations {}", operations.join(", ")),
        (true, true) => "publishes everything needed".to_owned(),
    }
}

/// The comment that marks a publication laredo created (and so may change).
pub const MANAGED_COMMENT: &str =
    "managed by laredo: its tables and operations follow laredo's configuration";

fn query_error(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> CatalogError {
    let what = what.into();
    move |source| CatalogError::Query { what, source }
}

/// Quotes an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub(crate) fn quote_table(table: &TableIdentifier) -> String {
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
pub(crate) async fn server_version(client: &Client) -> Result<i32, CatalogError> {
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

/// Codes of [`validate_server`]'s problems.
pub mod server_problem {
    /// `wal_level` is not `logical`.
    pub const WAL_LEVEL: &str = "WAL_LEVEL";
    /// The role may not replicate.
    pub const REPLICATION_PRIVILEGE: &str = "REPLICATION_PRIVILEGE";
    /// Every replication slot is taken.
    pub const NO_FREE_SLOT: &str = "NO_FREE_SLOT";
    /// The publication is missing, incomplete, or cannot be created.
    pub const PUBLICATION: &str = "PUBLICATION";
}

/// What logical replication needs of the server before anything connects for real:
/// `wal_level = logical`, a role with the REPLICATION attribute, a free replication slot
/// (unless `slot` exists already), and a publication that exists and covers `tables`
/// and the configured operations, or the right to create it. One
/// [`ValidationError`] (without a table) per problem, saying how to fix it.
pub async fn validate_server(
    client: &Client,
    slot: &str,
    publication: &PublicationConfig,
    tables: &[TableIdentifier],
) -> Vec<ValidationError> {
    let mut problems = Vec::new();
    let problem = |code: &str, message: String| ValidationError::new(None, code, message);
    let facts = client
        .query_one(
            "SELECT current_setting('wal_level'), \
                    coalesce((SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), false), \
                    current_user::text, \
                    current_setting('max_replication_slots')::int8, \
                    (SELECT count(*) FROM pg_replication_slots), \
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1), \
                    has_database_privilege(current_database(), 'CREATE')",
            &[&slot],
        )
        .await;
    let facts = match facts {
        Ok(facts) => facts,
        Err(e) => {
            return vec![problem(
                "CONNECTION",
                format!("reading the server's replication settings: {e}"),
            )];
        }
    };
    let wal_level: String = facts.get(0);
    if wal_level != "logical" {
        problems.push(problem(
            server_problem::WAL_LEVEL,
            format!(
                "wal_level is {wal_level}; logical replication needs wal_level = logical \
                 (set it in postgresql.conf or with ALTER SYSTEM, then restart PostgreSQL)"
            ),
        ));
    }
    let role: String = facts.get(2);
    if !facts.get::<_, bool>(1) {
        problems.push(problem(
            server_problem::REPLICATION_PRIVILEGE,
            format!(
                "role {role:?} may not replicate: grant it with ALTER ROLE {} REPLICATION",
                quote_ident(&role)
            ),
        ));
    }
    let (max_slots, used, ours): (i64, i64, bool) = (facts.get(3), facts.get(4), facts.get(5));
    if !ours && used >= max_slots {
        problems.push(problem(
            server_problem::NO_FREE_SLOT,
            format!(
                "no free replication slot for {slot:?}: all max_replication_slots = \
                 {max_slots} are in use (drop an unused slot, or raise max_replication_slots \
                 and restart PostgreSQL)"
            ),
        ));
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication.name],
        )
        .await;
    match exists {
        Ok(Some(_)) => {
            // Exists: would laredo accept it as it is (or may it change it)?
            let managed = client
                .query_one(
                    "SELECT coalesce(obj_description(oid, 'pg_publication'), '') = $2 \
                     FROM pg_publication WHERE pubname = $1",
                    &[&publication.name, &MANAGED_COMMENT],
                )
                .await
                .map(|row| row.get::<_, bool>(0))
                .unwrap_or(false);
            if !(publication.create && (managed || publication.adopt_existing))
                && let Err(e) = check_publication(client, publication, tables).await
            {
                problems.push(problem(server_problem::PUBLICATION, e.to_string()));
            }
        }
        Ok(None) if !publication.create => problems.push(problem(
            server_problem::PUBLICATION,
            format!(
                "publication {:?} does not exist and publication.create is false: create it \
                 (CREATE PUBLICATION {} FOR TABLE ...) or set publication.create = true",
                publication.name,
                quote_ident(&publication.name)
            ),
        )),
        Ok(None) if !facts.get::<_, bool>(6) => problems.push(problem(
            server_problem::PUBLICATION,
            format!(
                "publication {:?} is missing and role {role:?} may not create it: no CREATE \
                 privilege on the database (GRANT CREATE ON DATABASE ... TO {})",
                publication.name,
                quote_ident(&role)
            ),
        )),
        Ok(None) => {}
        Err(e) => problems.push(problem(
            "CONNECTION",
            format!("looking up publication {:?}: {e}", publication.name),
        )),
    }
    problems
}

/// The check [`sync_publication`] makes of a publication laredo may not change.
async fn check_publication(
    client: &Client,
    config: &PublicationConfig,
    tables: &[TableIdentifier],
) -> Result<(), CatalogError> {
    let mut check_only = config.clone();
    check_only.create = false;
    sync_publication(client, &check_only, tables).await
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
    /// With `create`, also take over an existing publication laredo did not create
    /// (it is then altered to match, and marked as laredo's). Off by default: a
    /// publication an operator made may serve other consumers.
    pub adopt_existing: bool,
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
            adopt_existing: false,
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

/// Makes sure the publication publishes `tables` as configured, changing only a
/// publication laredo may change:
///
/// - missing: created when `create` is on (and marked with [`MANAGED_COMMENT`]),
///   otherwise [`CatalogError::PublicationMissing`];
/// - laredo's own (marked), or adopted (`create` and `adopt_existing`): its table list,
///   operations, row filters and column lists are set to the configuration;
/// - anyone else's: never altered. It must already publish every configured table
///   (or `FOR ALL TABLES`) and operation, else [`CatalogError::PublicationIncomplete`]
///   names what is missing; row filters and column lists cannot be configured for it
///   ([`CatalogError::FiltersNeedManagedPublication`]).
///
/// # Errors
/// As above, row filters or column lists on a server older than 15, or a failed
/// statement.
pub async fn sync_publication(
    client: &Client,
    config: &PublicationConfig,
    tables: &[TableIdentifier],
) -> Result<(), CatalogError> {
    let found = client
        .query_opt(
            "SELECT p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, \
                    coalesce(obj_description(p.oid, 'pg_publication'), '') \
             FROM pg_publication p WHERE p.pubname = $1",
            &[&config.name],
        )
        .await
        .map_err(query_error(format!(
            "looking up publication {:?}",
            config.name
        )))?;
    let Some(found) = found else {
        if !config.create {
            return Err(CatalogError::PublicationMissing(config.name.clone()));
        }
        return write_publication(client, config, tables, false).await;
    };
    let ours = found.get::<_, String>(5) == MANAGED_COMMENT;
    if config.create && (ours || config.adopt_existing) {
        if !ours {
            tracing::warn!(
                publication = config.name,
                "adopting an existing publication (publication.adopt_existing): its tables \
                 and operations now follow the configuration"
            );
        }
        return write_publication(client, config, tables, true).await;
    }
    if !config.row_filters.is_empty() || !config.column_lists.is_empty() {
        return Err(CatalogError::FiltersNeedManagedPublication(
            config.name.clone(),
        ));
    }
    let all_tables: bool = found.get(0);
    let published = [
        ("insert", found.get::<_, bool>(1)),
        ("update", found.get::<_, bool>(2)),
        ("delete", found.get::<_, bool>(3)),
        ("truncate", found.get::<_, bool>(4)),
    ];
    let missing_operations: Vec<String> = config
        .publish
        .iter()
        .filter(|op| {
            published
                .iter()
                .any(|(name, on)| name.eq_ignore_ascii_case(op.trim()) && !on)
        })
        .map(|op| op.trim().to_owned())
        .collect();
    let missing_tables = if all_tables {
        Vec::new()
    } else {
        let have = publication_tables(client, &config.name).await?;
        tables
            .iter()
            .filter(|t| !have.contains(t))
            .cloned()
            .collect()
    };
    if missing_tables.is_empty() && missing_operations.is_empty() {
        Ok(())
    } else {
        Err(CatalogError::PublicationIncomplete {
            name: config.name.clone(),
            missing_tables,
            missing_operations,
        })
    }
}

/// Creates the publication (`exists` false) or sets it to the configuration, and marks
/// it as laredo's.
async fn write_publication(
    client: &Client,
    config: &PublicationConfig,
    tables: &[TableIdentifier],
    exists: bool,
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
    let mut statements = match (exists, tables.is_empty()) {
        (true, true) => format!("ALTER PUBLICATION {name} SET (publish = '{publish}')"),
        (true, false) => format!(
            "ALTER PUBLICATION {name} SET TABLE {spec}; ALTER PUBLICATION {name} SET (publish = '{publish}')"
        ),
        (false, true) => format!("CREATE PUBLICATION {name} WITH (publish = '{publish}')"),
        (false, false) => {
            format!("CREATE PUBLICATION {name} FOR TABLE {spec} WITH (publish = '{publish}')")
        }
    };
    let _ = write!(
        statements,
        "; COMMENT ON PUBLICATION {name} IS '{}'",
        MANAGED_COMMENT.replace('\'', "''")
    );
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
