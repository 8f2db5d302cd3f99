//! Bearer-token roles: a tower layer in front of the routes that looks at the request
//! path (`/package.Service/Method`) and demands `authorization: Bearer <token>` with a
//! token of the role the method needs.
//!
//! - **admin** methods ([`OAM_ADMIN_METHODS`] and any configured in addition) need an
//!   admin token;
//! - every other method (Query, fan-out `Sync`, the OAM reads, reflection) needs a read
//!   or an admin token;
//! - the health service stays open, for probes.
//!
//! It is a layer rather than a tonic interceptor because interceptors do not see the
//! request path. It runs inside the gRPC-Web translation, so browsers get the rejection
//! as a gRPC-Web status. Tokens are compared in constant time (`subtle`) against every
//! configured token, so a caller learns neither a token byte by byte nor which token
//! came close.

use std::collections::HashSet;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use laredo_core::ConfigError;
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

/// The methods of `laredo.v1.LaredoOAMService` that change something (reload, pause,
/// resume, reset, drain, snapshots, dead-letter replay and purge, replay): the admin
/// methods, to which [`admin_methods`](crate::GrpcServerBuilder::admin_methods) adds.
/// The read-only methods (status, readiness, tables, schemas, listing snapshots and dead
/// letters) need a read or an admin token.
pub const OAM_ADMIN_METHODS: &[&str] = &[
    "/laredo.v1.LaredoOAMService/ReloadTable",
    "/laredo.v1.LaredoOAMService/ReloadAll",
    "/laredo.v1.LaredoOAMService/PauseSync",
    "/laredo.v1.LaredoOAMService/ResumeSync",
    "/laredo.v1.LaredoOAMService/ResetSource",
    "/laredo.v1.LaredoOAMService/DrainReplication",
    "/laredo.v1.LaredoOAMService/CreateSnapshot",
    "/laredo.v1.LaredoOAMService/RestoreSnapshot",
    "/laredo.v1.LaredoOAMService/DeleteSnapshot",
    "/laredo.v1.LaredoOAMService/PruneSnapshots",
    "/laredo.v1.LaredoOAMService/ReplayDeadLetters",
    "/laredo.v1.LaredoOAMService/PurgeDeadLetters",
    "/laredo.v1.LaredoOAMService/StartReplay",
    "/laredo.v1.LaredoOAMService/StopReplay",
];

/// The role a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Open to anyone: the health service.
    Open,
    /// A read or an admin token.
    Read,
    /// An admin token.
    Admin,
}

/// The health service: open, so probes need no token.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The tokens of each role and which methods are admin methods.
pub(crate) struct AuthPolicy {
    admin_tokens: Vec<Vec<u8>>,
    read_tokens: Vec<Vec<u8>>,
    admin_methods: HashSet<String>,
    /// Entries ending in `/`: every method of that service.
    admin_services: Vec<String>,
}

impl std::fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPolicy")
            .field("admin_tokens", &self.admin_tokens.len())
            .field("read_tokens", &self.read_tokens.len())
            .field("admin_methods", &self.admin_methods)
            .field("admin_services", &self.admin_services)
            .finish()
    }
}

impl AuthPolicy {
    /// Validates the tokens and the extra admin method paths, pushing every problem to
    /// `errors`. The admin methods are [`OAM_ADMIN_METHODS`] plus `extra_admin_methods`.
    pub(crate) fn new(
        admin_tokens: &[String],
        read_tokens: &[String],
        extra_admin_methods: &[String],
        errors: &mut Vec<ConfigError>,
    ) -> Option<Self> {
        let mut valid = true;
        for (key, tokens) in [("admin_token", admin_tokens), ("read_token", read_tokens)] {
            for (idx, token) in tokens.iter().enumerate() {
                let key = format!("{key}[{idx}]");
                if token.is_empty() {
                    errors.push(ConfigError::at(key, "must not be empty"));
                    valid = false;
                } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    // It travels in an HTTP header after "Bearer ": visible ASCII only.
                    errors.push(ConfigError::at(key, "must be visible ASCII without spaces"));
                    valid = false;
                }
            }
        }
        let mut admin_methods: HashSet<String> =
            OAM_ADMIN_METHODS.iter().map(|m| (*m).to_string()).collect();
        let mut admin_services = Vec::new();
        for (idx, method) in extra_admin_methods.iter().enumerate() {
            match method_path_kind(method) {
                Some(PathKind::Method) => {
                    admin_methods.insert(method.clone());
                }
                Some(PathKind::Service) => admin_services.push(method.clone()),
                None => {
                    errors.push(ConfigError::at(
                        format!("admin_methods[{idx}]"),
                        format!(
                            "{method:?} is not a method path (\"/package.Service/Method\") \
                             or a service path (\"/package.Service/\")"
                        ),
                    ));
                    valid = false;
                }
            }
        }
        valid.then(|| Self {
            admin_tokens: admin_tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            read_tokens: read_tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            admin_methods,
            admin_services,
        })
    }

    pub(crate) fn method_count(&self) -> usize {
        self.admin_methods.len() + self.admin_services.len()
    }

    pub(crate) fn token_counts(&self) -> (usize, usize) {
        (self.admin_tokens.len(), self.read_tokens.len())
    }

    pub(crate) fn role_of(&self, path: &str) -> Role {
        if path.starts_with(HEALTH_PREFIX) {
            Role::Open
        } else if self.admin_methods.contains(path)
            || self
                .admin_services
                .iter()
                .any(|prefix| path.starts_with(prefix.as_str()))
        {
            Role::Admin
        } else {
            Role::Read
        }
    }

    /// The role `token` has, looking at every token (constant time per token).
    fn role_of_token(&self, token: &[u8]) -> Option<Role> {
        let matches = |tokens: &[Vec<u8>]| {
            tokens.iter().fold(subtle::Choice::from(0), |found, t| {
                found | t.as_slice().ct_eq(token)
            })
        };
        let admin = bool::from(matches(&self.admin_tokens));
        let read = bool::from(matches(&self.read_tokens));
        if admin {
            Some(Role::Admin)
        } else if read {
            Some(Role::Read)
        } else {
            None
        }
    }

    /// `Ok` when the request may go on.
    fn check<B>(&self, request: &http::Request<B>) -> Result<(), Status> {
        let path = request.uri().path();
        let needed = self.role_of(path);
        let what = match needed {
            Role::Open => return Ok(()),
            Role::Admin => "an admin method: send the admin token",
            Role::Read => "protected: send a read or admin token",
        };
        let Some(header) = request.headers().get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "{path} is {what} as \"authorization: Bearer <token>\""
            )));
        };
        let Some(token) = bearer_token(header.as_bytes()) else {
            return Err(Status::unauthenticated(format!(
                "{path} is {what}: the authorization header must be \"Bearer <token>\""
            )));
        };
        match (needed, self.role_of_token(token)) {
            (_, Some(Role::Admin)) | (Role::Read, Some(Role::Read)) => Ok(()),
            (_, Some(_)) => Err(Status::permission_denied(format!(
                "{path} is an admin method: the token has the read role only"
            ))),
            (Role::Admin, None) => Err(Status::unauthenticated(format!(
                "{path} is an admin method: the bearer token is not an admin token"
            ))),
            (_, None) => Err(Status::unauthenticated(format!(
                "{path} is protected: the bearer token is not a known token"
            ))),
        }
    }
}

enum PathKind {
    Method,
    Service,
}

/// `/package.Service/Method` or `/package.Service/`.
fn method_path_kind(path: &str) -> Option<PathKind> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    };
    if !name_ok(service) {
        return None;
    }
    if method.is_empty() {
        Some(PathKind::Service)
    } else if name_ok(method) && !method.contains('.') {
        Some(PathKind::Method)
    } else {
        None
    }
}

/// The credentials of `Bearer <credentials>`; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let space = header.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = header.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Layer that applies an [`AuthPolicy`]; without one (insecure mode) it lets everything
/// through.
#[derive(Debug, Clone)]
pub(crate) struct AuthLayer {
    policy: Option<Arc<AuthPolicy>>,
}

impl AuthLayer {
    pub(crate) fn new(policy: Option<Arc<AuthPolicy>>) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    policy: Option<Arc<AuthPolicy>>,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for Auth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let verdict = match &self.policy {
            Some(policy) => policy.check(&request),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(status) => {
                tracing::warn!(
                    method = request.uri().path(),
                    reason = status.message(),
                    "call rejected"
                );
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "adm1n";
    const READ: &str = "r3ad";

    fn policy(extra: &[&str]) -> AuthPolicy {
        let extra: Vec<String> = extra.iter().map(|m| (*m).to_string()).collect();
        let mut errors = Vec::new();
        let policy = AuthPolicy::new(
            &[ADMIN.to_string(), "second-admin".to_string()],
            &[READ.to_string()],
            &extra,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        policy.unwrap()
    }

    fn request(path: &str, authorization: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(path);
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        builder.body(()).unwrap()
    }

    fn code(result: Result<(), Status>) -> Option<tonic::Code> {
        result.err().map(|s| s.code())
    }

    const RESET: &str = "/laredo.v1.LaredoOAMService/ResetSource";
    const QUERY: &str = "/laredo.v1.LaredoQueryService/CountRows";

    #[test]
    fn health_is_open() {
        let p = policy(&[]);
        assert_eq!(
            code(p.check(&request("/grpc.health.v1.Health/Check", None))),
            None
        );
    }

    #[test]
    fn read_methods_need_a_read_or_admin_token() {
        let p = policy(&[]);
        let unauthenticated = Some(tonic::Code::Unauthenticated);
        assert_eq!(code(p.check(&request(QUERY, None))), unauthenticated);
        assert_eq!(
            code(p.check(&request(QUERY, Some("Bearer nope")))),
            unauthenticated
        );
        assert_eq!(
            code(p.check(&request(QUERY, Some("Bearer r3a")))),
            unauthenticated
        );
        assert_eq!(code(p.check(&request(QUERY, Some("Bearer r3ad")))), None);
        assert_eq!(code(p.check(&request(QUERY, Some("Bearer adm1n")))), None);
        assert_eq!(
            code(p.check(&request(QUERY, Some("bearer  second-admin")))),
            None
        );
    }

    #[test]
    fn admin_methods_need_an_admin_token() {
        let p = policy(&[]);
        let unauthenticated = Some(tonic::Code::Unauthenticated);
        assert_eq!(code(p.check(&request(RESET, None))), unauthenticated);
        assert_eq!(
            code(p.check(&request(RESET, Some("Basic adm1n")))),
            unauthenticated
        );
        assert_eq!(
            code(p.check(&request(RESET, Some("Bearer adm1")))),
            unauthenticated
        );
        assert_eq!(
            code(p.check(&request(RESET, Some("Bearer r3ad")))),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(p.check(&request(RESET, Some("Bearer adm1n")))), None);
        assert_eq!(
            code(p.check(&request(RESET, Some("Bearer second-admin")))),
            None
        );
    }

    #[test]
    fn extra_admin_methods_add_to_the_defaults() {
        let p = policy(&["/a.S/", "/b.T/Write"]);
        assert_eq!(p.role_of("/a.S/Anything"), Role::Admin);
        assert_eq!(p.role_of("/b.T/Write"), Role::Admin);
        assert_eq!(p.role_of("/b.T/Read"), Role::Read);
        assert_eq!(p.role_of("/a.Sx/Anything"), Role::Read);
        assert_eq!(p.role_of(RESET), Role::Admin, "the defaults stay");
    }

    #[test]
    fn bad_configuration_is_reported_at_once() {
        let methods = vec![
            "ReloadTable".to_string(),
            "/a.S/Ok".to_string(),
            "/x".to_string(),
        ];
        let mut errors = Vec::new();
        assert!(
            AuthPolicy::new(
                &[String::new()],
                &["has space".to_string()],
                &methods,
                &mut errors
            )
            .is_none()
        );
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "admin_token[0]: must not be empty",
                "read_token[0]: must be visible ASCII without spaces",
                "admin_methods[0]: \"ReloadTable\" is not a method path (\"/package.Service/Method\") or a service path (\"/package.Service/\")",
                "admin_methods[2]: \"/x\" is not a method path (\"/package.Service/Method\") or a service path (\"/package.Service/\")",
            ]
        );
    }

    #[test]
    fn oam_admin_methods_are_method_paths() {
        for method in OAM_ADMIN_METHODS {
            assert!(
                matches!(method_path_kind(method), Some(PathKind::Method)),
                "{method}"
            );
        }
    }
}
