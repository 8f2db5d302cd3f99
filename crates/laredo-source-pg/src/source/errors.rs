//! Errors of the server, the drivers and this crate's modules, sorted into the
//! [`SourceError`] classes a caller acts on.
//!
//! PostgreSQL names each error with a SQLSTATE
//! (<https://www.postgresql.org/docs/current/errcodes-appendix.html>): class 28
//! (invalid authorization: a wrong password, a role that may not log in, a
//! `pg_hba.conf` rule) and 42501 (insufficient privilege) are a permission an operator
//! must grant; class 08 (connection exception) and 57P01-57P03 (the server shutting
//! down, crashed, or not accepting connections yet) are a lost connection; 3D000 (no
//! such database) and 53400 (a limit such as `max_replication_slots` reached) are
//! settings. tokio-postgres hands the code over ([`tokio_postgres::Error::code`]);
//! pgwire-replication only in its message text, `... (SQLSTATE 42501)`. A closed
//! connection or an I/O error in the chain is a lost connection; a TLS setting or a
//! certificate the server's does not verify against is a setting
//! ([`TlsError::is_retryable`]).
//!
//! The class decides the variant only: the text stays what failed followed by the
//! cause's chain, as [`SourceError::Other`] prints it.

use laredo_core::{BoxError, SourceError};
use pgwire_replication::PgWireError;

use crate::catalog::CatalogError;
use crate::replication::ReplicationError;
use crate::tls::TlsError;

/// What a caller does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The connection dropped or the server could not be reached: try again.
    Lost,
    /// A privilege or the login is missing: an operator must grant it.
    Permission,
    /// A setting, the source's or the server's, is wrong: an operator must change it.
    Configuration,
    /// Nothing a caller can act on.
    Other,
}

/// `cause`, which ended `what`, as the [`SourceError`] of its class: a lost
/// connection, a permission, a setting, or [`SourceError::Other`].
pub(super) fn failed(what: impl Into<String>, cause: impl Into<BoxError>) -> SourceError {
    let cause = cause.into();
    let message = what.into();
    match classify(&*cause) {
        Class::Lost => SourceError::ConnectionLost {
            message,
            cause: Some(cause),
        },
        Class::Permission => SourceError::PermissionDenied {
            message,
            cause: Some(cause),
        },
        Class::Configuration => SourceError::Configuration {
            message,
            cause: Some(cause),
        },
        Class::Other => SourceError::Other {
            message,
            cause: Some(cause),
        },
    }
}

/// Connecting to `endpoint` failed with `cause`: [`SourceError::Connect`], unless the
/// server refused the login or a setting is wrong; the text is the same either way.
pub(super) fn connect_failed(endpoint: String, cause: impl Into<BoxError>) -> SourceError {
    let cause = cause.into();
    match classify(&*cause) {
        Class::Permission => SourceError::PermissionDenied {
            message: format!("cannot connect to {endpoint}"),
            cause: Some(cause),
        },
        Class::Configuration => SourceError::Configuration {
            message: format!("cannot connect to {endpoint}"),
            cause: Some(cause),
        },
        Class::Lost | Class::Other => SourceError::Connect { endpoint, cause },
    }
}

/// The SQLSTATE a pgwire-replication server error carries in its text, if any.
pub(super) fn sqlstate(error: &PgWireError) -> Option<String> {
    let PgWireError::Server(text) = error else {
        return None;
    };
    let start = text.rfind("(SQLSTATE ")? + "(SQLSTATE ".len();
    Some(text[start..].trim_end_matches(')').to_string())
}

/// The class of the first error in `error`'s chain that has one.
fn classify(error: &(dyn std::error::Error + 'static)) -> Class {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(class) = class_of(error) {
            return class;
        }
        next = error.source();
    }
    Class::Other
}

/// The class of `error` itself; `None` to look at its cause.
fn class_of(error: &(dyn std::error::Error + 'static)) -> Option<Class> {
    if let Some(error) = error.downcast_ref::<tokio_postgres::Error>() {
        if let Some(code) = error.code() {
            return Some(class_of_sqlstate(code.code()));
        }
        // Without a code the cause tells (I/O, TLS), or the connection is gone.
        return error.is_closed().then_some(Class::Lost);
    }
    if let Some(error) = error.downcast_ref::<PgWireError>() {
        return Some(match error {
            PgWireError::Io(_) => Class::Lost,
            PgWireError::Auth(_) => Class::Permission,
            PgWireError::Server(_) => {
                sqlstate(error).map_or(Class::Other, |c| class_of_sqlstate(&c))
            }
            _ => Class::Other,
        });
    }
    if let Some(error) = error.downcast_ref::<TlsError>() {
        return Some(if error.is_retryable() {
            Class::Lost
        } else {
            Class::Configuration
        });
    }
    if let Some(error) = error.downcast_ref::<CatalogError>() {
        return match error {
            CatalogError::Query { .. } => None,
            _ => Some(Class::Configuration),
        };
    }
    if let Some(ReplicationError::ConnectionString(_)) = error.downcast_ref::<ReplicationError>() {
        return Some(Class::Configuration);
    }
    error.is::<std::io::Error>().then_some(Class::Lost)
}

/// The class of a SQLSTATE.
fn class_of_sqlstate(code: &str) -> Class {
    match code {
        "42501" => Class::Permission,
        "57P01" | "57P02" | "57P03" => Class::Lost,
        "3D000" | "53400" => Class::Configuration,
        _ if code.starts_with("28") => Class::Permission,
        _ if code.starts_with("08") => Class::Lost,
        _ => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn server_errors_carry_their_sqlstate() {
        let e =
            PgWireError::Server("replication slot \"x\" does not exist (SQLSTATE 42704)".into());
        assert_eq!(sqlstate(&e).as_deref(), Some("42704"));
        assert_eq!(sqlstate(&PgWireError::Protocol("x".into())), None);
    }

    #[test]
    fn sqlstates_sort_into_what_a_caller_does() {
        for (code, class) in [
            ("42501", Class::Permission),
            ("28000", Class::Permission),
            ("28P01", Class::Permission),
            ("08006", Class::Lost),
            ("57P01", Class::Lost),
            ("57P03", Class::Lost),
            ("3D000", Class::Configuration),
            ("53400", Class::Configuration),
            ("42704", Class::Other),
            ("55006", Class::Other),
        ] {
            assert_eq!(class_of_sqlstate(code), class, "{code}");
        }
    }

    #[test]
    fn the_first_error_in_the_chain_with_a_class_decides_and_the_text_stays() {
        let denied = failed(
            "creating replication slot \"s\"",
            ReplicationError::Session {
                what: "creating the slot".to_string(),
                source: PgWireError::Server(
                    "permission denied to create replication slot (SQLSTATE 42501)".into(),
                ),
            },
        );
        assert!(
            matches!(denied, SourceError::PermissionDenied { .. }) && denied.needs_operator(),
            "{denied:?}"
        );
        assert_eq!(
            denied.to_string(),
            "creating replication slot \"s\": creating the slot: server error: permission \
             denied to create replication slot (SQLSTATE 42501)"
        );

        let reset = PgWireError::Io(Arc::new(io::Error::from(io::ErrorKind::ConnectionReset)));
        let lost = failed("starting replication", reset);
        assert!(
            matches!(lost, SourceError::ConnectionLost { .. }) && lost.is_retryable(),
            "{lost:?}"
        );

        let unreadable = failed(
            "creating replication slot \"s\"",
            ReplicationError::Tls(TlsError::File {
                key: "sslrootcert",
                path: PathBuf::from("/nowhere/ca.pem"),
                problem: "cannot read: no such file".to_string(),
            }),
        );
        assert!(
            matches!(unreadable, SourceError::Configuration { .. }),
            "{unreadable:?}"
        );

        let missing = failed(
            "publication \"p\"",
            CatalogError::PublicationMissing("p".to_string()),
        );
        assert!(
            matches!(missing, SourceError::Configuration { .. }),
            "{missing:?}"
        );

        let unknown = failed(
            "starting replication",
            PgWireError::Server("publication \"p\" does not exist (SQLSTATE 42704)".into()),
        );
        assert!(matches!(unknown, SourceError::Other { .. }), "{unknown:?}");
    }

    #[test]
    fn a_refused_login_is_denied_and_a_refused_connection_is_a_connect_error() {
        let endpoint = || "PostgreSQL at db:5432 (sslmode=disable)".to_string();
        let denied = connect_failed(endpoint(), PgWireError::Auth("password rejected".into()));
        assert!(
            matches!(denied, SourceError::PermissionDenied { .. }),
            "{denied:?}"
        );
        assert_eq!(
            denied.to_string(),
            "cannot connect to PostgreSQL at db:5432 (sslmode=disable): authentication error: \
             password rejected"
        );
        let refused = connect_failed(
            endpoint(),
            io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused"),
        );
        assert!(
            matches!(refused, SourceError::Connect { .. }) && refused.is_retryable(),
            "{refused:?}"
        );
        assert_eq!(
            refused.to_string(),
            "cannot connect to PostgreSQL at db:5432 (sslmode=disable): connection refused"
        );
    }
}
