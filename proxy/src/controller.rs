//! The proxy's one client of the controller, typed by the API's own types
//! ([`devdb_shared::api`], [`devdb_shared::RouteUpdate`]): the route feed
//! (`GET /v1/routes/watch?changes=true`), wakes (`POST /v1/databases/{name}/start?wake=true`) and
//! activity reports (`POST /v1/activity`), each with the admin token when one is given.
//!
//! One HTTP client serves them all: rustls with the ring provider, verifying with the system's
//! roots when the controller is reached over https. Inside a cluster the controller is plain http
//! and the proxy's image carries no CA certificates: there the client is made without any root
//! (https would then fail to connect, saying why) instead of the proxy failing to start, as
//! reqwest's default client does on a system without roots.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use devdb_shared::api::{ActivityReport, ErrorBody};
use devdb_shared::{Name, RouteUpdate};
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

/// How long connecting to the controller may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request to the controller (a report, a wake) may take in all; the route feed is
/// a stream and has no such bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request to the controller ended with, when not what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Not reached, or the answer was cut off.
    #[error("cannot reach the controller: {0}")]
    Unreachable(#[from] reqwest::Error),
    /// Refused (403): the controller's reason, for the log only.
    #[error("refused by the controller: {0}")]
    Refused(String),
    /// Any other answer than success.
    #[error("the controller answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    /// A line of the route feed that is not a route update.
    #[error("bad route table: {0}")]
    BadUpdate(#[source] serde_json::Error),
    /// The route feed ended.
    #[error("the controller closed the stream")]
    Closed,
    /// The route feed sent a change before any whole table to apply it to.
    #[error("a change of the routes before any table")]
    ChangeBeforeTable,
}

/// The controller's API, as the proxy calls it. Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct ControllerClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ControllerClient {
    /// `base`: the controller's URL, e.g. `http://127.0.0.1:8080`; `token`: an admin token.
    ///
    /// # Errors
    /// When reqwest cannot make a client even without roots (no TLS back end at all).
    pub fn new(base: &str, token: Option<String>) -> reqwest::Result<Self> {
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, http: http_client()? })
    }

    /// The route feed's URL, for logs.
    pub fn routes_url(&self) -> String {
        format!("{}/v1/routes/watch?changes=true", self.base)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Asks the controller to start `name` as a proxy's wake.
    ///
    /// # Errors
    /// [`ControllerError::Refused`] when the controller will not (the owner's running quota);
    /// the others when it cannot be asked or answers otherwise.
    pub async fn wake(&self, name: &Name) -> Result<(), ControllerError> {
        let path = format!("/v1/databases/{name}/start?wake=true");
        let request = self.request(Method::POST, &path).timeout(REQUEST_TIMEOUT);
        success(request.send().await?).await.map(drop)
    }

    /// Posts this replica's activity report.
    ///
    /// # Errors
    /// As [`ControllerClient::wake`].
    pub async fn report(&self, report: &ActivityReport) -> Result<(), ControllerError> {
        let request = self.request(Method::POST, "/v1/activity").timeout(REQUEST_TIMEOUT).json(report);
        success(request.send().await?).await.map(drop)
    }

    /// Subscribes to the route feed: the whole table first, then the changes.
    ///
    /// # Errors
    /// As [`ControllerClient::wake`].
    pub async fn route_updates(&self) -> Result<RouteFeed, ControllerError> {
        let response = success(self.request(Method::GET, "/v1/routes/watch?changes=true").send().await?).await?;
        Ok(RouteFeed { body: Box::pin(response.bytes_stream()), pending: Vec::new() })
    }
}

/// The route feed: newline-delimited JSON, one [`RouteUpdate`] a line.
pub struct RouteFeed {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    pending: Vec<u8>,
}

impl RouteFeed {
    /// The next update.
    ///
    /// # Errors
    /// [`ControllerError::Closed`] at the stream's end, [`ControllerError::BadUpdate`] for a line
    /// that is not an update, [`ControllerError::Unreachable`] when the stream breaks.
    pub async fn next(&mut self) -> Result<RouteUpdate, ControllerError> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return serde_json::from_slice(&line).map_err(ControllerError::BadUpdate);
            }
            let chunk = self.body.next().await.ok_or(ControllerError::Closed)??;
            self.pending.extend_from_slice(&chunk);
        }
    }
}

/// The response when it is a success, else the error it says (the API's [`ErrorBody`]).
async fn success(response: Response) -> Result<Response, ControllerError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let message = match response.json::<ErrorBody>().await {
        Ok(body) => body.error.message,
        Err(_) => status.canonical_reason().unwrap_or("no reason").to_string(),
    };
    Err(if status == StatusCode::FORBIDDEN {
        ControllerError::Refused(message)
    } else {
        ControllerError::Status { status, message }
    })
}

/// The HTTP client; requests set their own overall timeouts (the route feed has none).
fn http_client() -> reqwest::Result<reqwest::Client> {
    // Idempotent; reqwest's rustls needs a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = || reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
    builder().build().or_else(|error| {
        tracing::warn!(%error, "no system root certificates: the controller is followed over http only");
        builder().tls_certs_only([]).build()
    })
}

#[cfg(test)]
mod tests {
    use axum::Json;
    use axum::http::StatusCode as Status;
    use axum::routing::{get, post};

    use super::*;

    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    /// What the client falls back to on a system without roots still speaks plain http.
    #[tokio::test]
    async fn a_client_without_roots_speaks_http() {
        let base = serve(axum::Router::new().route("/v1/ping", get(|| async { "pong" }))).await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().tls_certs_only([]).build().expect("a client without roots");
        let answer = client.get(format!("{base}/v1/ping")).send().await.expect("http");
        assert_eq!(answer.text().await.expect("body"), "pong");
    }

    fn refusal(status: Status, message: &str) -> (Status, Json<serde_json::Value>) {
        (status, Json(serde_json::json!({ "error": { "code": "x", "message": message } })))
    }

    #[tokio::test]
    async fn answers_are_read_as_the_apis_types() {
        let app = axum::Router::new()
            .route(
                "/v1/databases/{name}/start",
                post(|axum::extract::Path(name): axum::extract::Path<String>| async move {
                    match name.as_str() {
                        "kate-pg" => (Status::ACCEPTED, Json(serde_json::json!({}))),
                        "full-pg" => refusal(Status::FORBIDDEN, "over the running quota"),
                        _ => refusal(Status::CONFLICT, "being deleted"),
                    }
                }),
            )
            .route(
                "/v1/activity",
                post(|Json(report): Json<ActivityReport>| async move {
                    if report.replica == "proxy-a" && report.open.len() == 1 {
                        Status::NO_CONTENT
                    } else {
                        Status::BAD_REQUEST
                    }
                }),
            );
        let controller = ControllerClient::new(&serve(app).await, Some("t".into())).expect("client");
        let name = |n: &str| Name::new(n).expect("name");
        controller.wake(&name("kate-pg")).await.expect("woken");
        let refused = controller.wake(&name("full-pg")).await.expect_err("refused");
        assert!(matches!(&refused, ControllerError::Refused(m) if m == "over the running quota"), "{refused}");
        let other = controller.wake(&name("gone-pg")).await.expect_err("conflict");
        assert!(
            matches!(&other, ControllerError::Status { status, message } if *status == StatusCode::CONFLICT && message == "being deleted"),
            "{other}"
        );
        let report = ActivityReport { replica: "proxy-a".into(), open: vec![name("kate-pg")], active: Vec::new() };
        controller.report(&report).await.expect("taken");
        let bad = ActivityReport { replica: "proxy-b".into(), ..ActivityReport::default() };
        assert!(matches!(controller.report(&bad).await, Err(ControllerError::Status { .. })));
    }

    #[tokio::test]
    async fn the_route_feed_is_read_line_by_line_whatever_the_chunks() {
        let lines =
            "{\"version\":1,\"routes\":[]}\n{\"version\":2,\"changed\":[],\"removed\":[\"kate-pg\"]}\nnot json\n";
        let app = axum::Router::new().route(
            "/v1/routes/watch",
            get(move || async move {
                // One byte a chunk: lines arrive in pieces.
                let chunks = lines.bytes().map(|b| Ok::<_, std::io::Error>(Bytes::from(vec![b])));
                axum::body::Body::from_stream(futures_util::stream::iter(chunks.collect::<Vec<_>>()))
            }),
        );
        let controller = ControllerClient::new(&serve(app).await, None).expect("client");
        let mut feed = controller.route_updates().await.expect("subscribed");
        assert!(matches!(feed.next().await, Ok(RouteUpdate::Table(t)) if t.version == 1));
        assert!(matches!(feed.next().await, Ok(RouteUpdate::Changes(c)) if c.removed.len() == 1));
        assert!(matches!(feed.next().await, Err(ControllerError::BadUpdate(_))));
        assert!(matches!(feed.next().await, Err(ControllerError::Closed)));
    }
}
