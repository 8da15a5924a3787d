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

    /// Changes the config file and returns its path. It holds the token: it is written 0600
    /// (replaced whole, so a file an older version left readable is private afterwards), and
    /// DevDB's own config directory is 0700; a `$DEVDB_CONFIG` in a directory of the user's own
    /// leaves that directory as it is.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(change: impl FnOnce(&mut Settings)) -> anyhow::Result<PathBuf> {
        let path = Self::path().ok_or_else(|| anyhow::anyhow!("no config directory; set DEVDB_CONFIG"))?;
        let own_directory = std::env::var_os("DEVDB_CONFIG").is_none();
        Self::save_to(&path, own_directory, change)?;
        Ok(path)
    }

    /// Changes the config file at `path`; `own_directory`: its directory is DevDB's, made 0700.
    fn save_to(path: &std::path::Path, own_directory: bool, change: impl FnOnce(&mut Settings)) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let mut settings = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        change(&mut settings);
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        // Directories made here are private from the start.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        if own_directory {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        // A new file, private from its first byte, then renamed over the old one.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| {
                file.write_all(&serde_json::to_vec_pretty(&settings)?)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(anyhow::Error::from(error).context(format!("cannot write {}", path.display())));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn the_config_file_holding_the_token_is_private_even_if_it_was_not() {
        let home = tempfile::tempdir().expect("tempdir");
        // New: the directories are made private.
        let path = home.path().join("config/devdb/config.json");
        Settings::save_to(&path, true, |s| s.token = Some("kate-token-0123456789".into())).expect("saved");
        assert_eq!((mode(&path), mode(path.parent().expect("dir"))), (0o600, 0o700));
        // There already, readable by everyone (as older versions wrote it): made private.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(path.parent().expect("dir"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Settings::save_to(&path, true, |s| s.server = Some("https://devdb.example.com".into())).expect("saved");
        assert_eq!((mode(&path), mode(path.parent().expect("dir"))), (0o600, 0o700));
        let saved: Settings = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(saved.token.as_deref(), Some("kate-token-0123456789"), "the rest is kept");
        assert_eq!(saved.server.as_deref(), Some("https://devdb.example.com"));
        // $DEVDB_CONFIG in a directory of the user's own: the file is private, the directory
        // is left as it was.
        let shared = home.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = shared.join("devdb.json");
        std::fs::write(&path, "{}").expect("write");
        Settings::save_to(&path, false, |s| s.token = Some("kate-token-0123456789".into())).expect("saved");
        assert_eq!((mode(&path), mode(&shared)), (0o600, 0o755));
        let leftovers: Vec<_> =
            std::fs::read_dir(&shared).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(leftovers, ["devdb.json"], "no temporary file is left behind");
    }
}
