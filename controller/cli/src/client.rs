//! The CLI's side of the REST API: settings (server, token) and a small typed client whose
//! errors are one line a person can act on.

use std::path::PathBuf;

use devdb_shared::api::ErrorBody;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Where the server URL and token come from: flag or environment, then the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Settings {
    /// The config file: `$DEVDB_CONFIG`, else `devdb/config.json` in the user's config dir.
    pub fn path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("DEVDB_CONFIG") {
            return Some(path.into());
        }
        directories::ProjectDirs::from("", "", "devdb").map(|d| d.config_dir().join("config.json"))
    }

    fn from_file() -> Self {
        Self::path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Flags and environment win over the file.
    pub fn load(server: Option<String>, token: Option<String>) -> Self {
        let file = Self::from_file();
        Self { server: server.or(file.server), token: token.or(file.token) }
    }

    /// The server URL in effect.
    pub fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(DEFAULT_SERVER)
    }

    /// Changes the config file and returns its path.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(change: impl FnOnce(&mut Settings)) -> anyhow::Result<PathBuf> {
        let path = Self::path().ok_or_else(|| anyhow::anyhow!("no config directory; set DEVDB_CONFIG"))?;
        let mut settings = Self::from_file();
        change(&mut settings);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&settings)?)?;
        Ok(path)
    }
}

/// A failed API call, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the DevDB API at {server}: {reason} (is `devdb up` running, or is the server set with `devdb config set-server`?)"
    )]
    Unreachable { server: String, reason: String },
    #[error("{0}")]
    Api(String),
    #[error("the API answered {status} with an unexpected body")]
    Unexpected { status: u16 },
}

/// A REST client for one server.
pub struct ApiClient {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl ApiClient {
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            http: crate::http::client_builder().build()?,
            server: settings.server().trim_end_matches('/').to_string(),
            token: settings.token.clone(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    /// `GET path?query` as text (CSV).
    pub async fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        let body = self.raw(self.http.get(self.url(path)).query(query)).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET path?query`, decoded.
    pub async fn get_query<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        self.send(self.http.get(self.url(path)).query(query)).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// DELETE for endpoints that answer 204 No Content.
    pub async fn delete_empty(&self, path: &str) -> Result<(), ClientError> {
        self.raw(self.http.delete(self.url(path))).await.map(|_| ())
    }

    /// Whether the API server is on this machine (so, with `devdb up`, is the proxy).
    pub fn is_local(&self) -> bool {
        let host = self.server.split("://").nth(1).unwrap_or(&self.server);
        ["127.", "localhost", "[::1]"].iter().any(|p| host.starts_with(p))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    async fn raw(&self, mut request: reqwest::RequestBuilder) -> Result<bytes::Bytes, ClientError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            server: self.server.clone(),
            reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| ClientError::Api(e.to_string()))?;
        if status.is_success() {
            return Ok(body);
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => Err(ClientError::Api(err.error.message)),
            Err(_) => Err(ClientError::Unexpected { status: status.as_u16() }),
        }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let body = self.raw(request).await?;
        serde_json::from_slice(&body).map_err(|_| ClientError::Unexpected { status: 200 })
    }
}
