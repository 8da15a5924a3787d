//! The API server's flags (each with a `DEVDB_CONTROLLER_*` environment fallback) and the
//! validated [`ApiConfig`]. Each runtime adapter has flags of its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use devdb_shared::Domain;

use crate::auth::{Tokens, TokensError};

/// Flags of the API server (`devdb-controller`, and `devdb up`).
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address of the REST API.
    #[arg(long, env = "DEVDB_CONTROLLER_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub api_listen: SocketAddr,

    /// DNS suffix of instance host names (must match the proxy's --domain).
    #[arg(long, env = "DEVDB_CONTROLLER_DOMAIN", default_value = "db.devdb.localhost")]
    pub domain: Domain,

    /// The port clients reach the proxy on, used in connection strings.
    #[arg(long, env = "DEVDB_CONTROLLER_PUBLIC_PORT", default_value_t = 6432)]
    pub public_port: u16,

    /// JSON file of API tokens: `{"tokens": [{"token": "…", "owner": "kate"}, {"token": "…",
    /// "admin": true}]}`. Required when --api-listen is not a loopback address.
    #[arg(long, env = "DEVDB_CONTROLLER_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// A single admin token (in addition to --tokens-file).
    #[arg(long, env = "DEVDB_CONTROLLER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Let owner tokens restore from private, loopback and link-local addresses too (by default
    /// only admins may: such a source reaches inside the platform, cloud metadata included).
    #[arg(long, env = "DEVDB_CONTROLLER_ALLOW_PRIVATE_SOURCES")]
    pub allow_private_sources: bool,

    /// How long `?wait=true` waits for a database before answering 504 with its status.
    #[arg(long, env = "DEVDB_CONTROLLER_WAIT_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait_timeout: std::time::Duration,

    /// How long a database may go without a session before it is stopped (projects and
    /// databases may say otherwise; 0s: never). A connection wakes it.
    #[arg(long, env = "DEVDB_CONTROLLER_IDLE_STOP_AFTER", default_value = "30m", value_parser = humantime::parse_duration)]
    pub idle_stop_after: std::time::Duration,

    /// JSON file of quotas per owner: `{"default": {"databases": 10, "running": 5, "disk":
    /// "50GiB"}, "owners": {"kate": {"databases": 20}}}`. Without it: no quotas.
    #[arg(long, env = "DEVDB_CONTROLLER_QUOTAS_FILE")]
    pub quotas_file: Option<PathBuf>,

    /// How often the controller looks for idle and expired databases.
    #[arg(long, env = "DEVDB_CONTROLLER_LIFECYCLE_CHECK_EVERY", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lifecycle_check_every: std::time::Duration,

    /// How often the controller samples each running database's statistics (size, sessions,
    /// commits, rows, cache hits, longest query) for its charts, `/metrics` and usage reports.
    #[arg(long, env = "DEVDB_CONTROLLER_SAMPLE_EVERY", default_value = "30s", value_parser = parse_interval)]
    pub sample_every: std::time::Duration,

    /// Restores one owner may run at once; more wait their turn (`pending`).
    #[arg(long, env = "DEVDB_CONTROLLER_MAX_RESTORES_PER_OWNER", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_restores_per_owner: u32,

    /// Snapshot generations each project keeps, its current one among them: the others are
    /// what `devdb project rollback` can return to (1: none). Older ones are removed.
    #[arg(long, env = "DEVDB_CONTROLLER_KEEP_SNAPSHOTS", default_value_t = crate::reconcile::SNAPSHOTS_KEPT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_snapshots: u32,
}

/// Validated API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub api_listen: SocketAddr,
    pub domain: Domain,
    pub public_port: u16,
    pub tokens: Tokens,
    pub allow_private_sources: bool,
    pub wait_timeout: std::time::Duration,
    pub max_restores_per_owner: usize,
    pub idle_stop_after: std::time::Duration,
    pub lifecycle_check_every: std::time::Duration,
    pub quotas: crate::quota::Quotas,
    pub sample_every: std::time::Duration,
    /// Snapshot generations each project keeps, its current one among them.
    pub keep_snapshots: usize,
}

impl ApiConfig {
    /// What the reconciler is configured with.
    pub fn reconciler(&self) -> crate::reconcile::ReconcilerConfig {
        crate::reconcile::ReconcilerConfig {
            restores_per_owner: self.max_restores_per_owner,
            idle_stop_after: self.idle_stop_after,
            quotas: self.quotas.clone(),
            snapshots_kept: self.keep_snapshots,
        }
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error("the API listens on {0}, beyond loopback, without API tokens: pass --tokens-file or --admin-token")]
    TokensRequired(SocketAddr),
    #[error(transparent)]
    Quotas(#[from] crate::quota::QuotasError),
}

impl TryFrom<ApiArgs> for ApiConfig {
    type Error = ConfigError;

    fn try_from(args: ApiArgs) -> Result<Self, Self::Error> {
        let tokens = Tokens::load(args.tokens_file.as_deref(), args.admin_token)?;
        if tokens.is_empty() && !args.api_listen.ip().is_loopback() {
            return Err(ConfigError::TokensRequired(args.api_listen));
        }
        Ok(Self {
            api_listen: args.api_listen,
            domain: args.domain,
            public_port: args.public_port,
            tokens,
            allow_private_sources: args.allow_private_sources,
            wait_timeout: args.wait_timeout,
            max_restores_per_owner: args.max_restores_per_owner as usize,
            idle_stop_after: args.idle_stop_after,
            lifecycle_check_every: args.lifecycle_check_every,
            sample_every: args.sample_every,
            keep_snapshots: args.keep_snapshots as usize,
            quotas: args.quotas_file.as_deref().map(crate::quota::Quotas::load).transpose()?.unwrap_or_default(),
        })
    }
}

/// A sampling interval: at least a second.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let every = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if every < std::time::Duration::from_secs(1) {
        return Err("sample at most once a second".into());
    }
    Ok(every)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
    }

    #[test]
    fn listening_beyond_loopback_requires_tokens() {
        let args = Cli::parse_from(["x", "--api-listen", "0.0.0.0:8080"]).api;
        let err = ApiConfig::try_from(args).expect_err("refused").to_string();
        assert!(err.contains("--tokens-file"), "{err}");
        let args =
            Cli::parse_from(["x", "--api-listen", "0.0.0.0:8080", "--admin-token", "an-admin-token-of-some-length"])
                .api;
        assert!(ApiConfig::try_from(args).is_ok());
        let config = ApiConfig::try_from(Cli::parse_from(["x"]).api).expect("loopback needs no token");
        assert_eq!(config.api_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.public_port, 6432);
        assert!(!config.allow_private_sources);
        assert_eq!((config.wait_timeout.as_secs(), config.max_restores_per_owner), (600, 2));
        assert_eq!(config.idle_stop_after.as_secs(), 1800, "databases sleep after 30 idle minutes");
        assert_eq!(config.reconciler().snapshots_kept, 3, "three generations kept");
    }

    #[test]
    fn at_least_one_snapshot_generation_is_kept() {
        assert!(Cli::try_parse_from(["x", "--keep-snapshots", "0"]).is_err());
        let config = ApiConfig::try_from(Cli::parse_from(["x", "--keep-snapshots", "5"]).api).expect("config");
        assert_eq!(config.reconciler().snapshots_kept, 5);
    }
}
