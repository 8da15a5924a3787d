//! The HTTP client settings shared by dump downloads, the CLI and the proxy's route feed.

use std::time::Duration;

/// A reqwest builder using rustls with the ring provider (the one crypto provider of the
/// workspace) and the platform's trust roots.
pub fn client_builder() -> reqwest::ClientBuilder {
    // Idempotent: fails only when a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("devdb/", env!("CARGO_PKG_VERSION")))
}
