//! The controller's flags (each with a `DEVDB_CONTROLLER_*` environment fallback) and the
//! validated [`ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use devdb_shared::Domain;

use crate::auth::{Tokens, TokensError};

/// Flags of the API server (`devdb-controller`, and `devdb up`).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Where the controller keeps its state, snapshots and database instances.
    #[arg(long, env = "DEVDB_CONTROLLER_DATA_DIR", default_value = ".devdb")]
    pub data_dir: PathBuf,

    /// Address of the REST API.
    #[arg(long, env = "DEVDB_CONTROLLER_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub api_listen: SocketAddr,

    /// DNS suffix of instance host names (must match the proxy's --domain).
    #[arg(long, env = "DEVDB_CONTROLLER_DOMAIN", default_value = "db.devdb.localhost")]
    pub domain: Domain,

    /// The port clients reach the proxy on, used in connection strings.
    #[arg(long, env = "DEVDB_CONTROLLER_PUBLIC_PORT", default_value_t = 6432)]
    pub public_port: u16,

    /// PostgreSQL binaries directory (default: pg_config --bindir, else the newest
    /// /usr/lib/postgresql/*/bin).
    #[arg(long, env = "DEVDB_CONTROLLER_PG_BIN")]
    pub pg_bin: Option<PathBuf>,

    /// JSON file of API tokens: `{"tokens": [{"token": "…", "owner": "kate"}, {"token": "…",
    /// "admin": true}]}`. Required when --api-listen is not a loopback address.
    #[arg(long, env = "DEVDB_CONTROLLER_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Where database instances run: `local` (PostgreSQL processes under --data-dir) or `kube`.
    #[arg(long, env = "DEVDB_CONTROLLER_RUNTIME", value_enum, default_value = "local")]
    pub runtime: RuntimeKind,

    /// A single admin token (in addition to --tokens-file).
    #[arg(long, env = "DEVDB_CONTROLLER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// The runtimes a controller can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Local,
    Kube,
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub domain: Domain,
    pub public_port: u16,
    pub pg_bin: Option<PathBuf>,
    pub tokens: Tokens,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error("the API listens on {0}, beyond loopback, without API tokens: pass --tokens-file or --admin-token")]
    TokensRequired(SocketAddr),
    #[error(
        "--runtime kube is not available in this release yet: the CRDs, manifests and chart are ready, the kube reconciler is not; use --runtime local"
    )]
    KubeRuntimeUnavailable,
}

impl TryFrom<ServerArgs> for ServerConfig {
    type Error = ConfigError;

    fn try_from(args: ServerArgs) -> Result<Self, Self::Error> {
        if args.runtime == RuntimeKind::Kube {
            return Err(ConfigError::KubeRuntimeUnavailable);
        }
        let tokens = Tokens::load(args.tokens_file.as_deref(), args.admin_token)?;
        if tokens.is_empty() && !args.api_listen.ip().is_loopback() {
            return Err(ConfigError::TokensRequired(args.api_listen));
        }
        Ok(Self {
            data_dir: args.data_dir,
            api_listen: args.api_listen,
            domain: args.domain,
            public_port: args.public_port,
            pg_bin: args.pg_bin,
            tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn listening_beyond_loopback_requires_tokens() {
        let args = Cli::parse_from(["x", "--api-listen", "0.0.0.0:8080"]).server;
        let err = ServerConfig::try_from(args).expect_err("refused").to_string();
        assert!(err.contains("--tokens-file"), "{err}");
        let args =
            Cli::parse_from(["x", "--api-listen", "0.0.0.0:8080", "--admin-token", "an-admin-token-of-some-length"])
                .server;
        assert!(ServerConfig::try_from(args).is_ok());
        let args = Cli::parse_from(["x", "--runtime", "kube"]).server;
        let err = ServerConfig::try_from(args).expect_err("not yet").to_string();
        assert!(err.contains("--runtime local"), "{err}");
        let args = Cli::parse_from(["x"]).server;
        let config = ServerConfig::try_from(args).expect("loopback needs no token");
        assert_eq!(config.api_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.public_port, 6432);
    }
}
