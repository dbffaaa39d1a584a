//! The one place where failures become HTTP responses: [`ApiError`] with Consul's status
//! codes and plain-text bodies.
//!
//! Invariant: every error body is `text/plain`; the texts are Consul's where Consul has one
//! (clients match on some of them, e.g. `CheckID "x" does not have associated TTL`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_server::ServerError;

use crate::config::DecodeError;
use crate::local::LocalError;

/// Body of the 404 for an unknown `/v1/` path (Consul writes it with a newline).
pub(crate) const UNKNOWN_ENDPOINT: &str = "Invalid URL path: not a recognized HTTP API endpoint\n";
/// Body of the 404 for a path outside `/v1/`.
pub(crate) const NOT_AN_API_PATH: &str =
    "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'\n";

/// A failed API request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400 with a reason.
    #[error("{0}")]
    BadRequest(String),
    /// 401 (`ACL support disabled`).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: an ACL token that does not exist, or lacks a permission (Consul's texts).
    #[error("{0}")]
    Forbidden(String),
    /// 404 with a reason (may be empty).
    #[error("{0}")]
    NotFound(String),
    /// 405 with an `Allow` header.
    #[error("method {method} not allowed")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The `Allow` header value.
        allow: &'static str,
    },
    /// 413: the body is over the limit.
    #[error("Request body too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 408: the body did not arrive in time.
    #[error("Request body not received within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// 429.
    #[error("{0}")]
    TooManyRequests(String),
    /// 500 with a reason.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn bad(reason: impl Into<String>) -> Self {
        ApiError::BadRequest(reason.into())
    }

    pub(crate) fn internal(reason: impl Into<String>) -> Self {
        ApiError::Internal(reason.into())
    }

    /// A client agent without a server to ask (Consul's text).
    pub(crate) fn no_servers() -> Self {
        ApiError::Internal("No known Consul servers".into())
    }

    /// `?dc=` names a datacenter this agent cannot reach (Consul's text).
    pub(crate) fn no_path_to_datacenter() -> Self {
        ApiError::Internal("No path to datacenter".into())
    }

    /// The status code.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "HTTP request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "HTTP request refused");
        }
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response();
        if let ApiError::MethodNotAllowed { allow, .. } = &self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        if e.is_validation() {
            ApiError::BadRequest(e.to_string())
        } else if e.is_no_leader() {
            ApiError::Internal("No cluster leader".into())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<crate::acl::Denied> for ApiError {
    fn from(e: crate::acl::Denied) -> Self {
        ApiError::Forbidden(e.to_string())
    }
}

impl From<crate::acl::AclError> for ApiError {
    fn from(e: crate::acl::AclError) -> Self {
        ApiError::Forbidden(e.to_string())
    }
}

impl From<LocalError> for ApiError {
    fn from(e: LocalError) -> Self {
        let text = e.to_string();
        if e.is_unknown_service() || e.is_unknown_check() || e.is_missing_service() {
            ApiError::NotFound(text)
        } else if e.is_invalid() {
            ApiError::BadRequest(text)
        } else {
            // TTL on a non-TTL check, persistence failures, shutdown: Consul answers 500.
            ApiError::Internal(text)
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        // Every decode problem is the client's, remote script checks included.
        ApiError::BadRequest(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, String, Option<String>, String) {
        let r = e.into_response();
        let status = r.status();
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let allow = r
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (
            status,
            ct,
            allow,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn errors_map_to_consul_status_codes_and_texts() {
        let (s, ct, _, b) = body(LocalError::NotTtl("web".into()).into()).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ct, "text/plain; charset=utf-8");
        assert_eq!(b, r#"CheckID "web" does not have associated TTL"#);

        let (s, _, _, b) = body(LocalError::UnknownService("x".into()).into()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            b,
            r#"Unknown service ID "x". Ensure that the service ID is passed, not the service name."#
        );
        let (s, _, _, _) = body(LocalError::UnknownCheck("x".into()).into()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _, b) = body(LocalError::MissingService("x".into()).into()).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::NOT_FOUND, r#"ServiceID "x" does not exist"#)
        );
        let (s, _, _, _) = body(LocalError::Invalid("bad".into()).into()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        let (s, _, _, b) = body(ServerError::NoLeader.into()).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader")
        );
        let (s, _, _, _) =
            body(ServerError::Validation(muster_server::ValidationError::MissingNode).into()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        let (s, _, _, b) = body(DecodeError::ScriptsDisabled.into()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(b.starts_with("Scripts are disabled on this agent from remote calls"));
        let (s, _, _, b) = body(DecodeError::Malformed("EOF".into()).into()).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::BAD_REQUEST, "Request decode failed: EOF")
        );

        let (s, _, allow, b) = body(ApiError::MethodNotAllowed {
            method: "POST".into(),
            allow: "OPTIONS,GET",
        })
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(allow.as_deref(), Some("OPTIONS,GET"));
        assert_eq!(b, "method POST not allowed");
        let (s, _, _, b) = body(ApiError::no_servers()).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "No known Consul servers")
        );
        let (s, _, _, _) = body(ApiError::PayloadTooLarge { limit: 10 }).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        let (s, _, _, _) = body(ApiError::TooManyRequests("busy".into())).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    }
}
