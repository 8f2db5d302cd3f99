//! gRPC-Web: tonic-web translates the protocol; CORS comes from tower-http, since
//! tonic-web (0.13 on) leaves it to the server. The header lists are those tonic-web
//! used to apply itself, plus `authorization` for the admin token.

use std::time::Duration;

use http::HeaderName;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Request headers a gRPC-Web client sends.
const ALLOW_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-grpc-web"),
    CONTENT_TYPE,
    HeaderName::from_static("x-user-agent"),
    HeaderName::from_static("grpc-timeout"),
    AUTHORIZATION,
];

/// Response headers a gRPC-Web client reads.
const EXPOSE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("grpc-status"),
    HeaderName::from_static("grpc-message"),
    HeaderName::from_static("grpc-status-details-bin"),
];

/// CORS for gRPC-Web: `origins` (already validated); none when empty.
pub(crate) fn cors_layer(origins: Vec<http::HeaderValue>) -> CorsLayer {
    let allow_origin = AllowOrigin::list(origins);
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([http::Method::POST])
        .allow_headers(ALLOW_HEADERS)
        .expose_headers(EXPOSE_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE)
}
