//! Getting a dump from its location onto local disk, with progress, under the source policy.
//!
//! `file://` paths are used in place; `http(s)://` is streamed into a file (never held in
//! memory) by a client that connects only where the [`SourcePolicy`] allows, within the
//! [`Limits`] (a size, and a least rate: a source that stops or trickles fails); `s3://` is
//! copied by the AWS CLI with the credentials in the environment (restore Jobs only).
//!
//! Errors name the source by its display form only ([`devdb_shared::source::display`]) and never
//! quote what a server answered.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use devdb_shared::source::{display, scrub};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::RestoreError;
use crate::guard::Guard;
use crate::limits::Limits;
use crate::policy::{self, Lookup, PolicyResolver, Refused, Rule, SourcePolicy};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// Where the fetched dump is.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Makes `location` available as a local file, downloading into `dest` when it is remote, from
/// addresses `policy` allows, within `limits`. `progress(done, total)` is called as bytes
/// arrive.
///
/// # Errors
/// [`RestoreError`] naming the source (display form) and what went wrong.
pub async fn fetch(
    location: &str,
    dest: &Path,
    policy: SourcePolicy,
    limits: Limits,
    progress: impl FnMut(u64, Option<u64>),
) -> Result<Fetched, RestoreError> {
    Fetcher::new(policy).limits(limits).fetch(location, dest, progress).await
}

/// [`fetch`], every chunk counted by `guard` (the owner's disk, the room left, a cancel).
///
/// # Errors
/// As [`fetch`], and the guard's reason.
pub async fn fetch_guarded(
    location: &str,
    dest: &Path,
    policy: SourcePolicy,
    limits: Limits,
    guard: &Guard,
    progress: impl FnMut(u64, Option<u64>),
) -> Result<Fetched, RestoreError> {
    Fetcher::new(policy).limits(limits).guard(guard.clone()).fetch(location, dest, progress).await
}

/// Fetches sources under a rule for addresses, resolving names with a lookup.
pub struct Fetcher {
    rule: Rule,
    client: reqwest::Client,
    limits: Limits,
    guard: Option<Guard>,
    /// Credentials for `s3://` sources, given to the AWS CLI's environment alone.
    aws: Vec<(String, String)>,
}

impl Fetcher {
    /// A fetcher under `policy`, with the system's resolver and the default limits.
    pub fn new(policy: SourcePolicy) -> Self {
        Self::with(policy.rule(), policy::system_lookup())
    }

    /// A fetcher under any rule and lookup (tests give their own).
    pub fn with(rule: Rule, lookup: Lookup) -> Self {
        Self { rule, client: client(rule, lookup), limits: Limits::default(), guard: None, aws: Vec::new() }
    }

    /// The same, with cloud credentials for `s3://` sources (variables of the AWS CLI's
    /// environment: `AWS_ACCESS_KEY_ID`…).
    #[must_use]
    pub fn aws(mut self, credentials: Vec<(String, String)>) -> Self {
        self.aws = credentials;
        self
    }

    /// The same, each chunk counted by `guard`.
    #[must_use]
    pub fn guard(mut self, guard: Guard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The same, within `limits`.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// See [`fetch`].
    ///
    /// # Errors
    /// [`RestoreError`] naming the source (display form) and what went wrong.
    pub async fn fetch(
        &self,
        location: &str,
        dest: &Path,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Fetched, RestoreError> {
        let shown = display(location);
        if let Some(path) = location.strip_prefix("file://") {
            let meta = tokio::fs::metadata(path)
                .await
                .map_err(|e| RestoreError::File { path: path.into(), reason: e.to_string() })?;
            let bytes = if meta.is_dir() { 0 } else { meta.len() };
            progress(bytes, Some(bytes));
            return Ok(Fetched { path: path.into(), bytes });
        }
        if location.starts_with("s3://") {
            let fetched = fetch_s3(location, dest, &self.aws).await?;
            if fetched.bytes > self.limits.max_source_bytes {
                return Err(RestoreError::TooLarge { limit: self.limits.max_source_bytes });
            }
            if let Some(guard) = &self.guard {
                guard.wrote(fetched.bytes)?;
            }
            return Ok(fetched);
        }
        if !(location.starts_with("http://") || location.starts_with("https://")) {
            return Err(RestoreError::UnsupportedLocation(shown));
        }
        let refused = |refused| RestoreError::Refused { location: shown.clone(), refused };
        let url = reqwest::Url::parse(location).map_err(|e| RestoreError::Unreachable {
            location: shown.clone(),
            reason: format!("not a valid URL ({e})"),
        })?;
        if let Some(host) = url.host_str() {
            policy::check_literal(self.rule, host).map_err(refused)?;
        }
        let response = self.client.get(url).send().await.map_err(|e| match refusal(&e) {
            Some(why) => refused(why),
            None => RestoreError::Unreachable { location: shown.clone(), reason: describe(&e) },
        })?;
        if !response.status().is_success() {
            return Err(RestoreError::HttpStatus { location: shown, status: response.status().as_u16() });
        }
        let total = response.content_length();
        let limits = self.limits;
        if total.is_some_and(|t| t > limits.max_source_bytes) {
            return Err(RestoreError::TooLarge { limit: limits.max_source_bytes });
        }
        let mut file = tokio::fs::File::create(dest).await?;
        let mut done = 0u64;
        let mut body = response.bytes_stream();
        // Every window must bring its least: a source that stops, or trickles, fails.
        let (mut window_end, mut window_bytes) = (tokio::time::Instant::now() + limits.stall_window, 0u64);
        loop {
            let next = tokio::time::timeout_at(window_end, body.next()).await;
            let stalled = RestoreError::Stalled { window: limits.stall_window, min: limits.stall_min_bytes };
            let chunk = match next {
                Err(_) if window_bytes < limits.stall_min_bytes => return Err(stalled),
                Err(_) => {
                    (window_end, window_bytes) = (tokio::time::Instant::now() + limits.stall_window, 0);
                    continue;
                }
                Ok(None) => break,
                Ok(Some(chunk)) => chunk.map_err(|e| {
                    RestoreError::Truncated(format!("the download from {shown} broke off: {}", describe(&e)))
                })?,
            };
            done += chunk.len() as u64;
            if done > limits.max_source_bytes {
                return Err(RestoreError::TooLarge { limit: limits.max_source_bytes });
            }
            file.write_all(&chunk).await?;
            if let Some(guard) = &self.guard {
                guard.wrote(chunk.len() as u64)?;
            }
            progress(done, total);
            window_bytes += chunk.len() as u64;
            if tokio::time::Instant::now() >= window_end {
                if window_bytes < limits.stall_min_bytes {
                    return Err(stalled);
                }
                (window_end, window_bytes) = (tokio::time::Instant::now() + limits.stall_window, 0);
            }
        }
        file.sync_all().await?;
        if let Some(total) = total
            && done < total
        {
            return Err(RestoreError::Truncated(format!("received {done} of {total} bytes from {shown}")));
        }
        Ok(Fetched { path: dest.into(), bytes: done })
    }
}

/// The HTTP client of a fetch: rustls with the platform's roots, a connect timeout, no proxy (a
/// proxy would resolve names where the rule cannot see), the rule's resolver, and redirects
/// checked by the rule too.
fn client(rule: Rule, lookup: Lookup) -> reqwest::Client {
    // Idempotent: fails only when a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match attempt.url().host_str().map(|host| policy::check_literal(rule, host)) {
            Some(Err(refused)) => attempt.error(refused),
            _ => attempt.follow(),
        }
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("devdb-restore/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver { rule, lookup }))
        .redirect(redirects)
        .build()
        .unwrap_or_default()
}

/// The policy refusal behind a client error, if that is what it is.
fn refusal(err: &reqwest::Error) -> Option<Refused> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = cause.source();
    }
    None
}

/// reqwest's top-level messages ("error sending request") hide the cause: the chain, without
/// the URL (it may carry secrets; the caller names the source by its display form).
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = scrub(&text, url.as_str());
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// `aws s3 cp`, with `credentials` (when the Job was given keys) or the workload identity the
/// platform set in this process's environment (`AWS_ROLE_ARN`…).
async fn fetch_s3(location: &str, dest: &Path, credentials: &[(String, String)]) -> Result<Fetched, RestoreError> {
    let shown = display(location);
    // The AWS CLI gets the workload identity the platform set (`AWS_ROLE_ARN`,
    // `AWS_WEB_IDENTITY_TOKEN_FILE`…), the credentials given, and nothing else of this
    // process's environment.
    let inherited = std::env::vars_os().filter(|(k, _)| {
        k.to_str().is_some_and(|k| k.starts_with("AWS_") || matches!(k, "PATH" | "HOME" | "LANG" | "TZ"))
    });
    let output = tokio::process::Command::new("aws")
        .env_clear()
        .envs(inherited)
        .envs(credentials.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["s3", "cp", "--only-show-errors", location])
        .arg(dest)
        .output()
        .await
        .map_err(|e| RestoreError::Unreachable {
            location: shown.clone(),
            reason: format!("cannot run the AWS CLI: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(RestoreError::Unreachable { location: shown, reason: scrub(last.trim(), location) });
    }
    let bytes = tokio::fs::metadata(dest).await?.len();
    Ok(Fetched { path: dest.into(), bytes })
}
