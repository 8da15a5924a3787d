//! The one HTTP client the proxy speaks to the controller with, shared by the route feed and
//! the activity reports: rustls with the ring provider, verifying with the system's roots when
//! the controller is reached over https.
//!
//! Inside a cluster the controller is plain http and the proxy's image carries no CA
//! certificates: there the client is made without any root (https would then fail to connect,
//! saying why) instead of the proxy failing to start, as reqwest's default client does on a
//! system without roots.

use std::time::Duration;

/// How long connecting to the controller may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client; requests set their own overall timeouts (a route stream has none).
///
/// # Errors
/// When reqwest cannot make a client even without roots (no TLS back end at all).
pub fn client() -> reqwest::Result<reqwest::Client> {
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
    /// What the client falls back to on a system without roots still speaks plain http.
    #[tokio::test]
    async fn a_client_without_roots_speaks_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = axum::Router::new().route("/v1/ping", axum::routing::get(|| async { "pong" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().tls_certs_only([]).build().expect("a client without roots");
        let answer = client.get(format!("http://{address}/v1/ping")).send().await.expect("http");
        assert_eq!(answer.text().await.expect("body"), "pong");
    }
}
