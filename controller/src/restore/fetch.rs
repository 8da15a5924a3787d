//! Streaming a dump from its location to a local file, with progress.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::RestoreError;

/// Where the fetched dump is.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Makes `location` available as a local file. `file://` paths are used in place; http(s) is
/// streamed into `dest` (never held in memory). `progress(done, total)` is called as bytes arrive.
///
/// # Errors
/// [`RestoreError`] naming the location and what went wrong.
pub async fn fetch(
    location: &str,
    dest: &Path,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Fetched, RestoreError> {
    if let Some(path) = location.strip_prefix("file://") {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| RestoreError::File { path: path.into(), reason: e.to_string() })?;
        let bytes = if meta.is_dir() { 0 } else { meta.len() };
        progress(bytes, Some(bytes));
        return Ok(Fetched { path: path.into(), bytes });
    }
    if !(location.starts_with("http://") || location.starts_with("https://")) {
        return Err(RestoreError::UnsupportedLocation(location.into()));
    }
    let unreachable = |e: reqwest::Error| RestoreError::Unreachable { location: location.into(), reason: describe(&e) };
    let response = http_client().get(location).send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(RestoreError::HttpStatus { location: location.into(), status: response.status().as_u16() });
    }
    let total = response.content_length();
    let mut file = tokio::fs::File::create(dest).await?;
    let mut done = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| RestoreError::Truncated(format!("download from {location} broke off: {}", describe(&e))))?;
        file.write_all(&chunk).await?;
        done += chunk.len() as u64;
        progress(done, total);
    }
    file.sync_all().await?;
    if let Some(total) = total
        && done < total
    {
        return Err(RestoreError::Truncated(format!("received {done} of {total} bytes from {location}")));
    }
    Ok(Fetched { path: dest.into(), bytes: done })
}

/// An HTTP client with rustls (ring) and the platform's roots; no proxy-wide timeout, since
/// dumps can be large, but a connect timeout.
pub fn http_client() -> reqwest::Client {
    crate::http::client_builder().build().unwrap_or_default()
}

/// reqwest's top-level messages ("error sending request") hide the cause; show the chain.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}
