//! Bearer-token protection of admin methods: a tower layer in front of the routes that
//! looks at the request path (`/package.Service/Method`) and, for an admin method,
//! demands `authorization: Bearer <token>`.
//!
//! It is a layer rather than a tonic interceptor because interceptors do not see the
//! request path. It runs inside the gRPC-Web translation, so browsers get the rejection
//! as a gRPC-Web status, and the token is compared in constant time (`subtle`), so a
//! caller cannot learn it byte by byte from response times.

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
/// resume, reset, drain, snapshots, dead-letter replay and purge, replay): the default
/// [admin methods](crate::GrpcServerBuilder::admin_methods). The read-only methods
/// (status, readiness, tables, schemas, listing snapshots and dead letters) stay open.
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

/// Which methods are admin methods and the token they need.
pub(crate) struct AdminPolicy {
    token: Vec<u8>,
    methods: HashSet<String>,
    /// Entries ending in `/`: every method of that service.
    service_prefixes: Vec<String>,
}

impl std::fmt::Debug for AdminPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminPolicy")
            .field("token", &"***")
            .field("methods", &self.methods)
            .field("service_prefixes", &self.service_prefixes)
            .finish()
    }
}

impl AdminPolicy {
    /// Validates the token and the method paths, pushing every problem to `errors`.
    pub(crate) fn new(
        token: &str,
        methods: &[String],
        errors: &mut Vec<ConfigError>,
    ) -> Option<Self> {
        let mut valid = true;
        if token.is_empty() {
            errors.push(ConfigError::at("admin_token", "must not be empty"));
            valid = false;
        } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
            // It travels in an HTTP header after "Bearer ": visible ASCII only.
            errors.push(ConfigError::at(
                "admin_token",
                "must be visible ASCII without spaces",
            ));
            valid = false;
        }
        let mut exact = HashSet::new();
        let mut service_prefixes = Vec::new();
        for (idx, method) in methods.iter().enumerate() {
            match method_path_kind(method) {
                Some(PathKind::Method) => {
                    exact.insert(method.clone());
                }
                Some(PathKind::Service) => service_prefixes.push(method.clone()),
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
            token: token.as_bytes().to_vec(),
            methods: exact,
            service_prefixes,
        })
    }

    pub(crate) fn method_count(&self) -> usize {
        self.methods.len() + self.service_prefixes.len()
    }

    fn is_admin(&self, path: &str) -> bool {
        self.methods.contains(path)
            || self
                .service_prefixes
                .iter()
                .any(|prefix| path.starts_with(prefix.as_str()))
    }

    /// `Ok` when the request may go on.
    fn check<B>(&self, request: &http::Request<B>) -> Result<(), Status> {
        let path = request.uri().path();
        if !self.is_admin(path) {
            return Ok(());
        }
        let Some(header) = request.headers().get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "{path} is an admin method: send the admin token as \"authorization: Bearer <token>\""
            )));
        };
        let Some(token) = bearer_token(header.as_bytes()) else {
            return Err(Status::unauthenticated(format!(
                "{path} is an admin method: the authorization header must be \"Bearer <token>\""
            )));
        };
        if bool::from(token.ct_eq(&self.token)) {
            Ok(())
        } else {
            Err(Status::unauthenticated(format!(
                "{path} is an admin method: the bearer token is not the admin token"
            )))
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

/// Layer that applies an [`AdminPolicy`]; without one it lets everything through.
#[derive(Debug, Clone)]
pub(crate) struct AdminAuthLayer {
    policy: Option<Arc<AdminPolicy>>,
}

impl AdminAuthLayer {
    pub(crate) fn new(policy: Option<Arc<AdminPolicy>>) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdminAuth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`AdminAuthLayer`].
#[derive(Debug, Clone)]
pub(crate) struct AdminAuth<S> {
    inner: S,
    policy: Option<Arc<AdminPolicy>>,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for AdminAuth<S>
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
                    "admin call rejected"
                );
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(methods: &[&str]) -> AdminPolicy {
        let methods: Vec<String> = methods.iter().map(|m| (*m).to_string()).collect();
        let mut errors = Vec::new();
        let policy = AdminPolicy::new("tok3n", &methods, &mut errors);
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

    #[test]
    fn open_methods_need_no_token() {
        let p = policy(&["/a.S/Admin"]);
        assert_eq!(code(p.check(&request("/a.S/Read", None))), None);
    }

    #[test]
    fn admin_methods_need_the_token() {
        let p = policy(&["/a.S/Admin"]);
        let unauthenticated = Some(tonic::Code::Unauthenticated);
        assert_eq!(code(p.check(&request("/a.S/Admin", None))), unauthenticated);
        assert_eq!(
            code(p.check(&request("/a.S/Admin", Some("Bearer nope")))),
            unauthenticated
        );
        assert_eq!(
            code(p.check(&request("/a.S/Admin", Some("Bearer tok3")))),
            unauthenticated
        );
        assert_eq!(
            code(p.check(&request("/a.S/Admin", Some("Basic tok3n")))),
            unauthenticated
        );
        assert_eq!(
            code(p.check(&request("/a.S/Admin", Some("Bearer tok3n")))),
            None
        );
        assert_eq!(
            code(p.check(&request("/a.S/Admin", Some("bearer  tok3n")))),
            None
        );
    }

    #[test]
    fn a_service_path_covers_all_its_methods() {
        let p = policy(&["/a.S/"]);
        assert!(p.is_admin("/a.S/Anything"));
        assert!(!p.is_admin("/a.Sx/Anything"));
        assert!(!p.is_admin("/b.S/Anything"));
    }

    #[test]
    fn bad_configuration_is_reported_at_once() {
        let methods = vec![
            "ReloadTable".to_string(),
            "/a.S/Ok".to_string(),
            "/x".to_string(),
        ];
        let mut errors = Vec::new();
        assert!(AdminPolicy::new("", &methods, &mut errors).is_none());
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "admin_token: must not be empty",
                "admin_methods[0]: \"ReloadTable\" is not a method path (\"/package.Service/Method\") or a service path (\"/package.Service/\")",
                "admin_methods[2]: \"/x\" is not a method path (\"/package.Service/Method\") or a service path (\"/package.Service/\")",
            ]
        );
        let mut errors = Vec::new();
        assert!(AdminPolicy::new("has space", &[], &mut errors).is_none());
        assert_eq!(
            errors[0].to_string(),
            "admin_token: must be visible ASCII without spaces"
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
