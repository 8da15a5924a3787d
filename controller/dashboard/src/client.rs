//! The dashboard's way to the API: every read and change is a request to the same router the
//! REST API serves, in-process, with the signed-in token. The dashboard therefore shows an
//! owner exactly what the API shows that owner, and cannot do what the API would refuse.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

/// An API answer that was not a success: its status and message, shown on the page.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }
}

/// The API, as one caller.
#[derive(Clone)]
pub struct Client {
    api: Router,
    token: Option<String>,
}

impl Client {
    pub fn new(api: Router, token: Option<String>) -> Self {
        Self { api, token }
    }

    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refusal> {
        self.fetch(Method::GET, path).await
    }

    /// `POST path` without a body (a look such as the personal-data scan), its answer decoded.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refusal> {
        self.fetch(Method::POST, path).await
    }

    async fn fetch<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, Refusal> {
        let body = self.raw(method, path, None).await?;
        serde_json::from_slice(&body).map_err(|e| Refusal::internal(format!("unexpected answer from {path}: {e}")))
    }

    /// `GET path` as text (CSV).
    pub async fn text(&self, path: &str) -> Result<String, Refusal> {
        Ok(String::from_utf8_lossy(&self.raw(Method::GET, path, None).await?).into_owned())
    }

    /// A change: `method path` with an optional JSON body.
    pub async fn send(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> Result<(), Refusal> {
        self.raw(method, path, body).await.map(drop)
    }

    async fn raw(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> Result<bytes::Bytes, Refusal> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .map_err(|e| Refusal::internal(e.to_string()))?;
        let response = self.api.clone().oneshot(request).await.map_err(|e| Refusal::internal(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| Refusal::internal(e.to_string()))?.to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<devdb_shared::api::ErrorBody>(&body)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| status.canonical_reason().unwrap_or("failed").to_string());
        Err(Refusal { status, message })
    }
}

/// `path?k=v&…` with the values encoded, empty ones left out.
pub fn with_query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let present: Vec<(&str, &str)> =
        pairs.iter().filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (*k, v))).collect();
    if present.is_empty() {
        return path.to_string();
    }
    format!("{path}?{}", serde_urlencoded::to_string(present).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_and_empty_values_left_out() {
        assert_eq!(with_query("/v1/x", &[("a", None), ("b", Some(""))]), "/v1/x");
        assert_eq!(
            with_query("/v1/x", &[("owner", Some("a&b=c")), ("p", Some("shop"))]),
            "/v1/x?owner=a%26b%3Dc&p=shop"
        );
    }
}
