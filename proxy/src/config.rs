//! Command-line flags (each with a `DEVDB_PROXY_*` environment fallback) and the validated
//! [`Config`] built from them. Nothing past this module sees [`Args`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::BoolishValueParser;
use devdb_shared::Domain;

use devdb_process::telemetry::LogFormat;

/// DevDB proxy: terminates TLS for PostgreSQL clients, reads the SNI host name
/// `<name>.<domain>` and relays the session to that database instance's backend.
///
/// Clients connect with
/// `psql "host=<name>.<domain> sslmode=require user=… dbname=…"`; clients that send no SNI
/// may add `options=endpoint=<name>`.
#[derive(Debug, Parser)]
#[command(name = "devdb-proxy", version, max_term_width = 100)]
pub struct Args {
    /// Address to accept PostgreSQL clients on.
    #[arg(long, env = "DEVDB_PROXY_LISTEN", default_value = "127.0.0.1:6432")]
    pub listen: SocketAddr,

    /// DNS suffix of instance host names: `kate-pg.<domain>` routes to `kate-pg`.
    #[arg(long, env = "DEVDB_PROXY_DOMAIN", default_value = "db.devdb.localhost")]
    pub domain: Domain,

    /// PEM certificate chain for `*.<domain>`. Without --tls-cert/--tls-key the proxy generates
    /// a development CA and certificate in --dev-certs-dir.
    #[arg(long, env = "DEVDB_PROXY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "DEVDB_PROXY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Where the generated development CA (`ca.crt`, for sslrootcert) and certificate live.
    #[arg(long, env = "DEVDB_PROXY_DEV_CERTS_DIR", default_value = ".devdb/certs")]
    pub dev_certs_dir: PathBuf,

    /// JSON routes file `{ "routes": [ { "name", "backend": "host:port", "state"? } ] }`,
    /// reloaded when it changes.
    #[arg(
        long,
        env = "DEVDB_PROXY_ROUTES_FILE",
        required_unless_present = "routes_from",
        conflicts_with = "routes_from"
    )]
    pub routes_file: Option<PathBuf>,

    /// Controller URL (e.g. http://127.0.0.1:8080) whose route feed keeps the table current.
    #[arg(long, env = "DEVDB_PROXY_ROUTES_FROM")]
    pub routes_from: Option<String>,

    /// API token for --routes-from (an admin token of the controller).
    #[arg(long, env = "DEVDB_PROXY_ROUTES_TOKEN", hide_env_values = true)]
    pub routes_token: Option<String>,

    /// Address of the admin HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, env = "DEVDB_PROXY_ADMIN_LISTEN", default_value = "127.0.0.1:9187")]
    pub admin_listen: SocketAddr,

    /// A token (at least 16 characters) that /metrics then requires (`Authorization: Bearer
    /// <token>`); with it, metrics are also kept per database, labelled with its name. Without
    /// it /metrics is open and names no database. /healthz and /readyz stay open (probes).
    #[arg(long, env = "DEVDB_PROXY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Token>,

    /// Keep metrics per database (a `route` label with each name) even without --admin-token:
    /// then anyone who reaches the admin port can list every database's name.
    #[arg(long, env = "DEVDB_PROXY_METRICS_PER_DATABASE", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub metrics_per_database: bool,

    /// Expect a PROXY protocol v2 header on every connection (AWS NLB, HAProxy).
    #[arg(long, env = "DEVDB_PROXY_PROXY_PROTOCOL", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: bool,

    /// Accept clients without TLS (never in production: passwords would cross in the clear).
    #[arg(long, env = "DEVDB_PROXY_ALLOW_PLAINTEXT", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub allow_plaintext: bool,

    /// Limit on TLS handshake plus startup message.
    #[arg(long, env = "DEVDB_PROXY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Limit on connecting to a backend.
    #[arg(long, env = "DEVDB_PROXY_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Sessions that may be authenticating at once per database instance (each holds one of
    /// its max_connections slots until it authenticates or times out); more get FATAL 53300.
    #[arg(long, env = "DEVDB_PROXY_MAX_AUTHENTICATING_PER_DATABASE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_authenticating_per_database: u32,

    /// Sessions that may be authenticating at once per client address (the PROXY protocol's
    /// address when --proxy-protocol is on); more get FATAL 53300.
    #[arg(long, env = "DEVDB_PROXY_MAX_AUTHENTICATING_PER_CLIENT", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_authenticating_per_client: u32,

    /// How long a session over one of those limits waits for a place before FATAL 53300 (a pool
    /// opening many connections at once queues rather than fails).
    #[arg(long, env = "DEVDB_PROXY_ADMISSION_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub admission_wait: Duration,

    /// How long a connection to a `starting` instance, or to an asleep one it wakes, waits for
    /// it before 57P03.
    #[arg(long, env = "DEVDB_PROXY_WAKE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub wake_timeout: Duration,

    /// Wakes of asleep databases that one client address (an IPv6 client: its /64; the PROXY
    /// protocol's address with --proxy-protocol) may cause within --wake-window, counted until a
    /// session of the woken database authenticates. A client that has not authenticated can wake
    /// any database it names, so more get FATAL 57P03 ("cannot be woken now").
    #[arg(long, env = "DEVDB_PROXY_MAX_WAKES_PER_CLIENT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_wakes_per_client: u32,

    /// Wakes of one database within --wake-window that no authenticated session followed; more
    /// get FATAL 57P03 (its owner can still `devdb db start` it).
    #[arg(long, env = "DEVDB_PROXY_MAX_WAKES_PER_DATABASE", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_wakes_per_database: u32,

    /// How long a wake that no authenticated session followed counts against its client and its
    /// database.
    #[arg(long, env = "DEVDB_PROXY_WAKE_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub wake_window: Duration,

    /// How often the databases with sessions here are reported to the controller (with
    /// --routes-from), which stops databases without any.
    #[arg(long, env = "DEVDB_PROXY_ACTIVITY_REPORT_EVERY", default_value = "15s", value_parser = humantime::parse_duration)]
    pub activity_report_every: Duration,

    /// After SIGTERM, how long new connections are still accepted while `/readyz` answers 503, so
    /// that load balancers stop sending before the listener closes (an AWS NLB takes tens of
    /// seconds to deregister a target). Then open sessions get --shutdown-grace.
    #[arg(long, env = "DEVDB_PROXY_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,

    /// After SIGTERM (and --drain-delay), how long open sessions may go on before they are closed.
    #[arg(long, env = "DEVDB_PROXY_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How often the routes file and certificates are checked for changes.
    #[arg(long, env = "DEVDB_PROXY_RELOAD_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,

    /// This replica's IPv4 address (in Kubernetes: the pod IP): the source of its questions to
    /// peers about cancel keys it does not hold, and left out of the peers it asks.
    #[arg(long, env = "DEVDB_PROXY_REPLICA_ADDR")]
    pub replica_addr: Option<std::net::IpAddr>,

    /// The replicas to ask about cancel keys this one does not hold: host names or addresses
    /// (comma-separated), resolved every 10 s, e.g. a headless Service of the proxy pods.
    #[arg(long, env = "DEVDB_PROXY_PEERS", value_delimiter = ',', requires = "replica_addr")]
    pub peers: Vec<String>,

    /// Log format.
    #[arg(long, env = "DEVDB_PROXY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Event loops relaying sessions, each on a thread of its own with its own listening socket
    /// (SO_REUSEPORT: the kernel spreads new connections over them). A session stays on the loop
    /// that accepted it, so no thread ever wakes another; more loops use more cores.
    #[arg(long, env = "DEVDB_PROXY_WORKER_THREADS", default_value = "1")]
    pub worker_threads: std::num::NonZeroUsize,
}

/// A secret of the admin port: never shown in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl std::str::FromStr for Token {
    type Err = String;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        if token.chars().count() < 16 {
            return Err("a token must be at least 16 characters".into());
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a token cannot contain spaces or control characters".into());
        }
        Ok(Self(token.to_string()))
    }
}

impl Token {
    /// Whether an `Authorization` header value carries this token (`Bearer <token>`), compared
    /// in constant time.
    pub fn authorizes(&self, authorization: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
            return false;
        };
        given.len() == self.0.len() && bool::from(given.as_bytes().ct_eq(self.0.as_bytes()))
    }
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generate (once) a development CA and wildcard certificate in this directory.
    Dev {
        dir: PathBuf,
    },
}

/// Where the routing table comes from.
#[derive(Debug, Clone)]
pub enum RoutesConfig {
    File(PathBuf),
    Controller { url: String, token: Option<String> },
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// What `/metrics` requires, if anything.
    pub admin_token: Option<Token>,
    /// `--metrics-per-database` (see [`Config::metrics_name_databases`]).
    pub metrics_per_database: bool,
    pub domain: Domain,
    pub tls: TlsSource,
    pub routes: RoutesConfig,
    pub proxy_protocol: bool,
    pub allow_plaintext: bool,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub wake_timeout: Duration,
    /// How often clients that have not authenticated may wake databases.
    pub wakes: crate::wake::Limits,
    pub activity_report_every: Duration,
    pub authenticating: crate::admission::Limits,
    pub drain_delay: Duration,
    pub shutdown_grace: Duration,
    pub reload_interval: Duration,
    pub replica_addr: Option<std::net::IpAddr>,
    pub peers: Vec<String>,
    pub log_format: LogFormat,
    pub worker_threads: std::num::NonZeroUsize,
}

impl Config {
    /// A configuration with the defaults of every optional flag, for embedding and tests.
    pub fn new(domain: Domain, tls: TlsSource, routes: RoutesConfig) -> Self {
        let args = Args::parse_from(["devdb-proxy", "--routes-file", "unused"]);
        Self { domain, tls, routes, ..Self::from(args) }
    }

    /// Whether metrics are kept per database, labelled with its name: only where a token keeps
    /// them from whoever reaches the admin port, or where asked for.
    pub fn metrics_name_databases(&self) -> bool {
        self.admin_token.is_some() || self.metrics_per_database
    }
}

impl From<Args> for Config {
    fn from(args: Args) -> Self {
        let tls = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            // clap enforces that the two come together.
            _ => TlsSource::Dev { dir: args.dev_certs_dir },
        };
        Self {
            listen: args.listen,
            admin_listen: args.admin_listen,
            metrics_per_database: args.metrics_per_database,
            admin_token: args.admin_token,
            domain: args.domain,
            tls,
            routes: match (args.routes_file, args.routes_from) {
                (_, Some(url)) => RoutesConfig::Controller { url, token: args.routes_token },
                // clap requires one of the two.
                (file, None) => RoutesConfig::File(file.unwrap_or_default()),
            },
            proxy_protocol: args.proxy_protocol,
            allow_plaintext: args.allow_plaintext,
            handshake_timeout: args.handshake_timeout,
            connect_timeout: args.connect_timeout,
            wake_timeout: args.wake_timeout,
            wakes: crate::wake::Limits {
                per_client: args.max_wakes_per_client as usize,
                per_database: args.max_wakes_per_database as usize,
                window: args.wake_window,
            },
            activity_report_every: args.activity_report_every,
            authenticating: crate::admission::Limits {
                per_database: args.max_authenticating_per_database as usize,
                per_client: args.max_authenticating_per_client as usize,
                wait: args.admission_wait,
            },
            drain_delay: args.drain_delay,
            shutdown_grace: args.shutdown_grace,
            reload_interval: args.reload_interval,
            replica_addr: args.replica_addr,
            peers: args.peers,
            log_format: args.log_format,
            worker_threads: args.worker_threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::from(Args::parse_from(["devdb-proxy", "--routes-file", "r.json"]));
        assert_eq!(config.listen.to_string(), "127.0.0.1:6432");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9187");
        assert_eq!(config.domain.as_str(), "db.devdb.localhost");
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert!(!config.allow_plaintext && !config.proxy_protocol);
        let limits = crate::admission::Limits { per_database: 32, per_client: 16, wait: Duration::from_secs(10) };
        assert_eq!(config.authenticating, limits);
        assert!(matches!(config.tls, TlsSource::Dev { .. }));
        assert_eq!(config.worker_threads.get(), 1, "one thread: the least CPU per transaction");
        assert_eq!(config.wakes, crate::wake::Limits::default());
        assert_eq!(config.wakes.window, Duration::from_secs(3600));
    }

    #[test]
    fn cert_and_key_come_together() {
        let err =
            Args::try_parse_from(["devdb-proxy", "--routes-file", "r", "--tls-cert", "c.pem"]).expect_err("refused");
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let args = Args::parse_from(["devdb-proxy", "--routes-file", "r", "--tls-cert", "c", "--tls-key", "k"]);
        assert!(matches!(Config::from(args).tls, TlsSource::Files { .. }));
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (flag, value) in [
            ("--domain", "bad_domain"),
            ("--listen", "nowhere"),
            ("--handshake-timeout", "soon"),
            ("--max-authenticating-per-client", "0"),
            ("--admin-token", "too-short"),
        ] {
            let err = Args::try_parse_from(["devdb-proxy", "--routes-file", "r", flag, value]).expect_err("refused");
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn metrics_name_databases_only_behind_a_token_or_when_asked_and_the_token_is_never_shown() {
        let parse =
            |extra: &[&str]| Config::from(Args::parse_from([&["devdb-proxy", "--routes-file", "r"], extra].concat()));
        assert!(!parse(&[]).metrics_name_databases());
        assert!(parse(&["--metrics-per-database"]).metrics_name_databases());
        let guarded = parse(&["--admin-token", "metrics-token-0123456789"]);
        assert!(guarded.metrics_name_databases());
        assert!(!format!("{guarded:?}").contains("metrics-token"), "{guarded:?}");
        let token = guarded.admin_token.expect("token");
        assert!(token.authorizes(Some("Bearer metrics-token-0123456789")));
        for refused in [None, Some("metrics-token-0123456789"), Some("Bearer metrics-token-012345678"), Some("Bearer ")]
        {
            assert!(!token.authorizes(refused), "{refused:?}");
        }
    }

    #[test]
    fn routes_come_from_a_file_or_the_controller_but_not_both() {
        let args = Args::parse_from(["devdb-proxy", "--routes-from", "http://c:8080", "--routes-token", "t"]);
        assert!(matches!(Config::from(args).routes, RoutesConfig::Controller { token: Some(_), .. }));
        assert!(Args::try_parse_from(["devdb-proxy"]).is_err(), "one is required");
        assert!(Args::try_parse_from(["devdb-proxy", "--routes-file", "r", "--routes-from", "http://c"]).is_err());
    }

    #[test]
    fn boolean_flags_accept_bare_and_env_style_values() {
        let args =
            Args::parse_from(["devdb-proxy", "--routes-file", "r", "--allow-plaintext", "--proxy-protocol=false"]);
        assert!(args.allow_plaintext);
        assert!(!args.proxy_protocol);
    }
}
