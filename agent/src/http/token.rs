//! The request's ACL token: `X-Consul-Token`, `Authorization: Bearer`, or `?token=` (in
//! Consul's order of precedence), resolved to an [`Authorizer`] before the handler runs,
//! plus the visibility rules read endpoints filter their rows with.
//!
//! Invariant: a handler that takes a [`Token`] never runs for a secret no token has (403
//! `ACL not found`); with ACLs disabled the authorizer allows everything and costs nothing.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::Api;
use super::error::ApiError;
use crate::acl::{Authorizer, Kind, Need};

/// The authorizer of the request's token, and the secret it carried (if any).
pub(crate) struct Token(pub(crate) Arc<Authorizer>, pub(crate) Option<String>);

impl FromRequestParts<Arc<Api>> for Token {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        if !api.acl.enabled() {
            return Ok(Token(Arc::new(Authorizer::all()), None));
        }
        let secret = secret_of(parts);
        let authorizer = api.acl.resolve(secret.as_deref()).await?;
        Ok(Token(authorizer, secret))
    }
}

/// The secret a request carries, if any.
fn secret_of(parts: &Parts) -> Option<String> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    if let Some(t) = header("x-consul-token") {
        return Some(t);
    }
    if let Some(auth) = header("authorization") {
        let mut words = auth.splitn(2, ' ');
        if words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("bearer"))
        {
            return words.next().map(|t| t.trim().to_owned());
        }
    }
    let query = parts.uri.query()?;
    form_urlencoded_token(query)
}

/// `token=` from a query string (percent-decoded).
fn form_urlencoded_token(query: &str) -> Option<String> {
    super::query::Query::parse(Some(query))
        .ok()?
        .get("token")
        .map(str::to_owned)
        .filter(|t| !t.is_empty())
}

impl Token {
    /// May the token see node `name`?
    pub(crate) fn node(&self, name: &str) -> bool {
        self.0.allows(Kind::Node, name, Need::Read)
    }

    /// May the token see service `service` on node `node`?
    pub(crate) fn service(&self, service: &str, node: &str) -> bool {
        self.0.allows(Kind::Service, service, Need::Read) && self.node(node)
    }

    /// May the token see a check: a service check needs the service, a node check the node.
    pub(crate) fn check(&self, service_name: &str, node: &str) -> bool {
        if service_name.is_empty() {
            self.node(node)
        } else {
            self.service(service_name, node)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_then_bearer_then_query() {
        let p = parts(
            "/v1/agent/self?token=q",
            &[("X-Consul-Token", "h"), ("Authorization", "Bearer b")],
        );
        assert_eq!(secret_of(&p).as_deref(), Some("h"));
        let p = parts("/v1/agent/self?token=q", &[("Authorization", "bearer  b ")]);
        assert_eq!(secret_of(&p).as_deref(), Some("b"));
        let p = parts(
            "/v1/agent/self?token=q%2Bx",
            &[("Authorization", "Basic zzz")],
        );
        assert_eq!(secret_of(&p).as_deref(), Some("q+x"));
        assert_eq!(secret_of(&parts("/v1/agent/self", &[])), None);
        assert_eq!(secret_of(&parts("/v1/agent/self?token=", &[])), None);
    }
}
