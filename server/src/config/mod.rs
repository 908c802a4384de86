//! Node configuration: TOML file plus environment overrides.
//!
//! The file format is compatible with Corrosion's: section and key names
//! (including Corrosion's aliases such as `bind_addr`, `uds_path` and the three
//! spellings of the bearer token) are accepted unchanged, so an existing
//! Corrosion config can be pointed at Verdigris.
//!
//! # Precedence
//!
//! Values are resolved lowest to highest:
//!
//! 1. built-in defaults (documented on each field);
//! 2. the TOML text (a file given with `-c`, or [`DEFAULT_CONFIG_TOML`]);
//! 3. Corrosion-style environment variables without a prefix, e.g. `DB__PATH`;
//! 4. Verdigris environment variables, e.g. `VERDIGRIS_DB__PATH`.
//!
//! In both environment forms `__` separates nesting levels, names are
//! case-insensitive and `_` stands for `-` in key names
//! (`VERDIGRIS_API__AUTHZ__BEARER_TOKEN` sets `api.authz.bearer-token`).
//! Lists are written comma-separated (`VERDIGRIS_GOSSIP__BOOTSTRAP=a:1,b:2`).
//! A `VERDIGRIS_` variable whose name contains `__` but names no known key is
//! an error; `VERDIGRIS_` variables without `__` (e.g. `VERDIGRIS_LOG`) are left
//! for other uses. Unprefixed variables are only considered when they start
//! with a known section (`db`, `api`, `gossip`, `admin`, `perf`, `log`) and
//! name a known key; anything else is someone else's variable and is ignored.
//!
//! # Unknown and ignored keys
//!
//! Corrosion settings that Verdigris does not implement yet (`[telemetry]`,
//! `[consul]`, `[reaper]`, `[api.pg]`, several `perf` tunables, ...) are
//! accepted and reported as [`ConfigWarning`]s. Every other unknown key is a
//! [`ConfigError`] naming the full dotted key, so typos never pass silently.
//!
//! Relative paths are returned as written; the caller resolves them.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// Configuration used by `verdigris agent` when no `-c` is given: a single
/// local node keeping its data in `./verdigris-data`, API on 127.0.0.1:8080.
pub const DEFAULT_CONFIG_TOML: &str = r#"# Verdigris embedded default configuration (single node, local use).
[db]
path = "verdigris-data/state.db"
schema_paths = ["verdigris-data/schema"]

[api]
addr = "127.0.0.1:8080"

[gossip]
addr = "127.0.0.1:8787"
plaintext = true

[admin]
path = "verdigris-data/admin.sock"
"#;

/// Prefix of Verdigris environment overrides.
const ENV_PREFIX: &str = "VERDIGRIS_";
/// Default gossip listen address (Corrosion requires one; we keep single-node use easy).
const DEFAULT_GOSSIP_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8787));
/// Smallest UDP payload QUIC guarantees to work with.
const MIN_MTU: u16 = 1200;

/// The complete, validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub db: DbConfig,
    pub api: ApiConfig,
    pub gossip: GossipConfig,
    pub admin: AdminConfig,
    pub perf: PerfConfig,
    pub log: LogConfig,
    /// `[watchdog]` (Verdigris only).
    pub watchdog: WatchdogConfig,
    /// `[snapshots]` (Verdigris only).
    pub snapshots: SnapshotsConfig,
}

/// `[db]`: the SQLite database and the schema it is kept in sync with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// `db.path` (required): the database file.
    pub path: PathBuf,
    /// `db.schema_paths` (default empty): `.sql` files or directories of them.
    pub schema_paths: Vec<PathBuf>,
    /// `db.subscriptions_path`: where subscription state lives; see [`DbConfig::subscriptions_dir`].
    pub subscriptions_path: Option<PathBuf>,
    /// `db.cache_size_kib` (default -1048576, i.e. 1 GiB): SQLite `cache_size`.
    pub cache_size_kib: i64,
    /// `db.subscription_log_retention` (Verdigris; default 10000): change-log entries kept per
    /// subscription for `from=` resumes.
    pub subscription_log_retention: u64,
    /// `db.subscription_idle_secs` (Verdigris; default 600): a subscription with no listener
    /// for this long is removed.
    pub subscription_idle_secs: u64,
}

impl DbConfig {
    /// The subscriptions directory: `subscriptions_path` if set, else
    /// `subscriptions` next to the database file.
    pub fn subscriptions_dir(&self) -> PathBuf {
        match &self.subscriptions_path {
            Some(p) => p.clone(),
            None => sibling_of(&self.path, "subscriptions"),
        }
    }
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// `api.addr` / `api.bind_addr` (required): one or more listen addresses.
    pub addr: Vec<SocketAddr>,
    /// `[api.authz]`: when present, requests must be authorized.
    pub authz: Option<AuthzConfig>,
    /// `api.endpoint_name`: name this node reports about itself.
    pub endpoint_name: Option<String>,
    /// `api.max_body_bytes` (default 16 MiB): largest accepted request body.
    pub max_body_bytes: usize,
    /// `api.query_timeout_secs` (default 60, 0 = none): per-request query timeout.
    pub query_timeout_secs: u64,
    /// `api.max_concurrency` (default 128): requests served at once.
    pub max_concurrency: usize,
    /// `[api.ws]`: the WebSocket endpoint's limits.
    pub ws: WsConfig,
}

/// `[api.ws]`: limits of `GET /v1/ws`. Every violation is answered with an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// `max_message_bytes` (default 1 MiB): largest client message (and frame); larger ones
    /// close the socket with code 1009.
    pub max_message_bytes: usize,
    /// `max_subscriptions` (default 10000): subscriptions per socket.
    pub max_subscriptions: usize,
    /// `max_sockets` (default 20000): open sockets per node.
    pub max_sockets: usize,
    /// `max_in_flight` (default 32): queries and transactions running at once per socket.
    pub max_in_flight: usize,
    /// `ping_interval_secs` (default 15): the node pings an idle socket this often.
    pub ping_interval_secs: u64,
    /// `idle_timeout_secs` (default 60): a socket silent this long (not even a pong) is closed.
    pub idle_timeout_secs: u64,
    /// `write_timeout_secs` (default 30): a socket that accepts no data this long is closed.
    pub write_timeout_secs: u64,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_message_bytes: 1024 * 1024,
            max_subscriptions: 10_000,
            max_sockets: 20_000,
            max_in_flight: 32,
            ping_interval_secs: 15,
            idle_timeout_secs: 60,
            write_timeout_secs: 30,
        }
    }
}

/// `[api.authz]`. `Debug` redacts the token so it never reaches logs.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthzConfig {
    /// `bearer-token` (aliases `authorization`, `bearer`).
    pub bearer_token: Option<String>,
}

impl fmt::Debug for AuthzConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.bearer_token.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthzConfig")
            .field("bearer_token", &token)
            .finish()
    }
}

/// `[gossip]`: cluster membership and replication transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// `gossip.addr` / `gossip.bind_addr` (default 127.0.0.1:8787).
    pub addr: SocketAddr,
    /// `gossip.external_addr`: address advertised to peers.
    pub external_addr: Option<SocketAddr>,
    /// `gossip.bootstrap` (default empty): peers to join, `host:port` strings.
    pub bootstrap: Vec<String>,
    /// `gossip.plaintext` (default false): run gossip without TLS.
    pub plaintext: bool,
    /// `[gossip.tls]`: TLS settings; mutually exclusive with `plaintext = true`.
    pub tls: Option<TlsConfig>,
    /// `gossip.cluster_id` (default 0).
    pub cluster_id: u16,
    /// `gossip.max_mtu`: at least 1200.
    pub max_mtu: Option<u16>,
    /// `gossip.idle_timeout_secs` (default 30).
    pub idle_timeout_secs: u32,
    /// `gossip.member_id`.
    pub member_id: Option<u16>,
    /// Verdigris-only `gossip.snapshot_bootstrap` (default true): a node whose database holds
    /// no replicated data yet copies a peer's database snapshot instead of pulling every
    /// version row by row.
    pub snapshot_bootstrap: bool,
    /// Verdigris-only `gossip.snapshot_min_bytes` (default 16 MiB): smallest peer database
    /// worth a snapshot; below it changes are fetched one by one.
    pub snapshot_min_bytes: u64,
}

/// `[gossip.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    /// Skip verification of peer certificates (testing only).
    pub insecure: bool,
    /// `[gossip.tls.client]`: client certificate for mutual TLS.
    pub client: Option<TlsClientConfig>,
}

/// `[gossip.tls.client]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[admin]`: the local admin socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `admin.path` / `admin.uds_path` (default `admin.sock` next to `db.path`).
    pub path: PathBuf,
}

/// `[perf]`: queue sizes and timings. Defaults match Corrosion's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfConfig {
    /// Default 20000.
    pub processing_queue_len: usize,
    /// Seconds; default 60.
    pub sql_tx_timeout: u64,
    /// Seconds; default 1.
    pub min_sync_backoff: u64,
    /// Seconds; default 15.
    pub max_sync_backoff: u64,
    /// Milliseconds; default 10.
    pub apply_queue_timeout: u64,
    /// Default 512.
    pub bcast_channel_len: usize,
    /// Default 1024.
    pub changes_channel_len: usize,
    /// Verdigris-only: broadcast bandwidth cap, default 10 MiB/s.
    pub broadcast_bytes_per_sec: u64,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `log.format` (default plaintext).
    pub format: LogFormat,
    /// `log.colors` (default true).
    pub colors: bool,
}

/// `log.format`: `"plaintext"` or `"json"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plaintext,
    Json,
}

/// A problem found while loading that is not fatal (e.g. a Corrosion key Verdigris ignores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning(pub String);

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a setting came from; its `Display` is a phrase like `in /etc/x.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Text passed to [`Config::from_toml_str`].
    Text,
    /// A file read by [`Config::load`].
    File(PathBuf),
    /// [`DEFAULT_CONFIG_TOML`].
    Embedded,
    /// The named environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Text => f.write_str("in the config text"),
            Origin::File(p) => write!(f, "in {}", p.display()),
            Origin::Embedded => f.write_str("in the embedded default config"),
            Origin::Env(var) => write!(f, "from environment variable `{var}`"),
        }
    }
}

/// Why a configuration could not be loaded. Every message says what is wrong,
/// where (key, file or environment variable) and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}; check the path and its permissions, or omit -c to use the embedded default", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TOML {origin}: {message}; fix the syntax at the position shown")]
    Syntax { origin: Origin, message: String },
    #[error("unknown config key `{key}` {origin}; check the spelling ({known})")]
    UnknownKey {
        key: String,
        origin: Origin,
        known: String,
    },
    #[error("unknown environment variable `{var}`: `{key}` does not name a Verdigris config key; check the spelling ({known}) or unset the variable")]
    UnknownEnvVar {
        var: String,
        key: String,
        known: String,
    },
    #[error("config key `{key}` {origin} {problem}")]
    InvalidValue {
        key: String,
        origin: Origin,
        problem: String,
    },
    #[error("required config key `{key}` is missing {origin}; {hint}")]
    Missing {
        key: String,
        origin: Origin,
        hint: String,
    },
    #[error("{message}")]
    Conflict { message: String },
}

impl Config {
    /// Parse TOML text, then apply environment overrides from `env` (an iterator of (key, value) pairs,
    /// normally std::env::vars()), validate, and return the config plus warnings.
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        from_source(text, Origin::Text, env)
    }

    /// Read a file and call from_toml_str. Error mentions the path.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        from_source(&text, Origin::File(path.to_path_buf()), env)
    }

    /// The embedded default (DEFAULT_CONFIG_TOML) with env overrides.
    pub fn default_with_env(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        from_source(DEFAULT_CONFIG_TOML, Origin::Embedded, env)
    }
}

fn from_source(
    text: &str,
    origin: Origin,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
    let raw: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            origin: origin.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
    let mut warnings = Vec::new();
    let mut table = Table::new();
    normalize(&raw, "", &origin, &mut table, &mut warnings)?;
    let env_origins = apply_env(&mut table, env, &mut warnings)?;
    let reader = Reader {
        root: &table,
        base: origin,
        env: env_origins,
    };
    Ok((build(&reader)?, warnings))
}

mod keys;
mod ops;
use keys::*;
pub use ops::{SnapshotsConfig, WatchdogConfig};

// ---- Typed extraction and validation ----

/// Short rendering of a value for error messages.
fn describe(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        Value::Table(_) => "a table".to_string(),
        other => other.to_string(),
    };
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s,
    }
}

const ADDR: &str = "an address like \"127.0.0.1:8080\" (IP and port; host names are not accepted)";

fn parse_addr(v: &Value) -> Option<SocketAddr> {
    v.as_str()?.trim().parse().ok()
}

fn sibling_of(path: &Path, name: &str) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from(name), |p| p.join(name))
}

/// Largest value accepted for `usize` settings (fits both `usize` and TOML's `i64`).
fn usize_max() -> i64 {
    i64::try_from(usize::MAX).unwrap_or(i64::MAX)
}

/// Typed access to the merged table; errors name the key and its origin.
struct Reader<'a> {
    root: &'a Table,
    base: Origin,
    /// Dotted key -> environment variable that set it.
    env: HashMap<String, String>,
}

impl Reader<'_> {
    fn origin(&self, key: &str) -> Origin {
        self.env
            .get(key)
            .map_or_else(|| self.base.clone(), |v| Origin::Env(v.clone()))
    }

    fn invalid(&self, key: &str, problem: String) -> ConfigError {
        ConfigError::InvalidValue {
            key: key.to_string(),
            origin: self.origin(key),
            problem,
        }
    }

    fn missing(&self, key: &str, example: &str) -> ConfigError {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        let var = key
            .replace('.', "__")
            .replace('-', "_")
            .to_ascii_uppercase();
        let hint = format!("add `{name} = {example}` under [{section}], or set {ENV_PREFIX}{var}");
        ConfigError::Missing {
            key: key.to_string(),
            origin: self.base.clone(),
            hint,
        }
    }

    fn raw(&self, key: &str) -> Option<&Value> {
        let mut parts = key.split('.');
        let mut cur = self.root.get(parts.next()?)?;
        for p in parts {
            cur = cur.as_table()?.get(p)?;
        }
        Some(cur)
    }

    /// Read `key` through `conv`; a value `conv` rejects is reported as "must be {what}".
    fn get<T>(
        &self,
        key: &str,
        what: &str,
        conv: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        let problem = || format!("must be {what}, got {}", describe(v));
        conv(v)
            .map(Some)
            .ok_or_else(|| self.invalid(key, problem()))
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(key, "a string", |v| v.as_str().map(str::to_string))
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let non_empty = |v: &Value| {
            v.as_str()
                .filter(|s| !s.trim().is_empty())
                .map(PathBuf::from)
        };
        self.get(key, "a non-empty path string", non_empty)
    }

    fn required_path(&self, key: &str, example: &str) -> Result<PathBuf, ConfigError> {
        self.path(key)?.ok_or_else(|| self.missing(key, example))
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self
            .get(key, "`true` or `false`", Value::as_bool)?
            .unwrap_or(default))
    }

    /// An integer in `min..=max`, converted to `T`.
    fn int<T: TryFrom<i64>>(
        &self,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<T>, ConfigError> {
        let in_range = |v: &Value| v.as_integer().filter(|i| (min..=max).contains(i));
        let what = format!("an integer from {min} to {max}");
        self.get(key, &what, |v| {
            in_range(v).and_then(|i| T::try_from(i).ok())
        })
    }

    /// A count that must be at least 1 (queue lengths, limits).
    fn count(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        Ok(self.int(key, 1, usize_max())?.unwrap_or(default))
    }

    /// A non-negative number (seconds, milliseconds, bytes).
    fn unsigned(&self, key: &str, default: u64) -> Result<u64, ConfigError> {
        Ok(self.int(key, 0, i64::MAX)?.unwrap_or(default))
    }

    fn addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.get(key, ADDR, parse_addr)
    }

    fn addrs(&self, key: &str) -> Result<Option<Vec<SocketAddr>>, ConfigError> {
        self.get(key, &format!("{ADDR} or a list of them"), |v| {
            match v.as_array() {
                Some(items) => items.iter().map(parse_addr).collect(),
                None => parse_addr(v).map(|a| vec![a]),
            }
        })
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        let list = |v: &Value| {
            v.as_array()?
                .iter()
                .map(|i| i.as_str().map(String::from))
                .collect()
        };
        Ok(self
            .get(key, "a list of strings like [\"a\", \"b\"]", list)?
            .unwrap_or_default())
    }
}

fn build(r: &Reader<'_>) -> Result<Config, ConfigError> {
    let path = r.required_path("db.path", "\"/var/lib/verdigris/state.db\"")?;
    let db = DbConfig {
        schema_paths: r
            .strings("db.schema_paths")?
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        subscriptions_path: r.path("db.subscriptions_path")?,
        cache_size_kib: r
            .get("db.cache_size_kib", "an integer", Value::as_integer)?
            .unwrap_or(-1_048_576),
        subscription_log_retention: r.count("db.subscription_log_retention", 10_000)? as u64,
        subscription_idle_secs: r.unsigned("db.subscription_idle_secs", 600)?,
        path,
    };

    let addr = r
        .addrs("api.addr")?
        .ok_or_else(|| r.missing("api.addr", "\"127.0.0.1:8080\""))?;
    if addr.is_empty() {
        return Err(r.invalid(
            "api.addr",
            format!("must list at least one address, got []; use {ADDR}"),
        ));
    }
    let authz = match r.raw("api.authz") {
        None => None,
        Some(_) => {
            let token = r.string("api.authz.bearer-token")?;
            if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
                let fix = "set a secret token or remove [api.authz] to disable authorization";
                return Err(r.invalid(
                    "api.authz.bearer-token",
                    format!("must not be empty; {fix}"),
                ));
            }
            Some(AuthzConfig {
                bearer_token: token,
            })
        }
    };
    let api = ApiConfig {
        addr,
        authz,
        endpoint_name: r.string("api.endpoint_name")?,
        max_body_bytes: r.count("api.max_body_bytes", 16 * 1024 * 1024)?,
        query_timeout_secs: r.unsigned("api.query_timeout_secs", 60)?,
        max_concurrency: r.count("api.max_concurrency", 128)?,
        ws: ws_config(r)?,
    };

    let tls = tls(r)?;
    let plaintext = r.bool("gossip.plaintext", false)?;
    if tls.is_some() && plaintext {
        let (tls_origin, plain_origin) = (
            r.origin("gossip.tls.cert_file"),
            r.origin("gossip.plaintext"),
        );
        return Err(ConfigError::Conflict {
            message: format!(
                "config keys `gossip.tls` ({tls_origin}) and `gossip.plaintext = true` ({plain_origin}) contradict each other; \
                 pick one: remove [gossip.tls] to gossip unencrypted, or remove `plaintext = true` to use TLS"
            ),
        });
    }
    let u16_max = i64::from(u16::MAX);
    let max_mtu: Option<u16> = r.int("gossip.max_mtu", 0, u16_max)?;
    if let Some(mtu) = max_mtu.filter(|m| *m < MIN_MTU) {
        let why = "the smallest packet size QUIC supports";
        let problem =
            format!("must be at least {MIN_MTU} ({why}), got {mtu}; raise it or remove the key");
        return Err(r.invalid("gossip.max_mtu", problem));
    }
    let gossip = GossipConfig {
        addr: r.addr("gossip.addr")?.unwrap_or(DEFAULT_GOSSIP_ADDR),
        external_addr: r.addr("gossip.external_addr")?,
        bootstrap: r.strings("gossip.bootstrap")?,
        plaintext,
        tls,
        cluster_id: r.int("gossip.cluster_id", 0, u16_max)?.unwrap_or(0),
        max_mtu,
        idle_timeout_secs: r
            .int("gossip.idle_timeout_secs", 0, u32::MAX.into())?
            .unwrap_or(30),
        member_id: r.int("gossip.member_id", 0, u16_max)?,
        snapshot_bootstrap: r.bool("gossip.snapshot_bootstrap", true)?,
        snapshot_min_bytes: r.unsigned("gossip.snapshot_min_bytes", 16 << 20)?,
    };

    // Computed after env overrides so it follows an overridden db.path.
    let admin = AdminConfig {
        path: r
            .path("admin.path")?
            .unwrap_or_else(|| sibling_of(&db.path, "admin.sock")),
    };

    let perf = PerfConfig {
        processing_queue_len: r.count("perf.processing_queue_len", 20_000)?,
        sql_tx_timeout: r.unsigned("perf.sql_tx_timeout", 60)?,
        min_sync_backoff: r.unsigned("perf.min_sync_backoff", 1)?,
        max_sync_backoff: r.unsigned("perf.max_sync_backoff", 15)?,
        apply_queue_timeout: r.unsigned("perf.apply_queue_timeout", 10)?,
        bcast_channel_len: r.count("perf.bcast_channel_len", 512)?,
        changes_channel_len: r.count("perf.changes_channel_len", 1024)?,
        broadcast_bytes_per_sec: r.unsigned("perf.broadcast_bytes_per_sec", 10 * 1024 * 1024)?,
    };
    if perf.min_sync_backoff > perf.max_sync_backoff {
        let (min, max) = (perf.min_sync_backoff, perf.max_sync_backoff);
        let fix = "lower it or raise `perf.max_sync_backoff`";
        let problem = format!("must not exceed `perf.max_sync_backoff` ({max}), got {min}; {fix}");
        return Err(r.invalid("perf.min_sync_backoff", problem));
    }

    let format = r.get("log.format", "\"plaintext\" or \"json\"", |v| {
        match v.as_str()?.to_ascii_lowercase().as_str() {
            "plaintext" => Some(LogFormat::Plaintext),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    })?;
    let log = LogConfig {
        format: format.unwrap_or(LogFormat::Plaintext),
        colors: r.bool("log.colors", true)?,
    };

    Ok(Config {
        db,
        api,
        gossip,
        admin,
        perf,
        log,
        watchdog: ops::watchdog(r)?,
        snapshots: ops::snapshots(r)?,
    })
}

fn ws_config(r: &Reader<'_>) -> Result<WsConfig, ConfigError> {
    let d = WsConfig::default();
    let ws = WsConfig {
        max_message_bytes: r.count("api.ws.max_message_bytes", d.max_message_bytes)?,
        max_subscriptions: r.count("api.ws.max_subscriptions", d.max_subscriptions)?,
        max_sockets: r.count("api.ws.max_sockets", d.max_sockets)?,
        max_in_flight: r.count("api.ws.max_in_flight", d.max_in_flight)?,
        ping_interval_secs: r.count("api.ws.ping_interval_secs", d.ping_interval_secs as usize)?
            as u64,
        idle_timeout_secs: r.count("api.ws.idle_timeout_secs", d.idle_timeout_secs as usize)?
            as u64,
        write_timeout_secs: r.count("api.ws.write_timeout_secs", d.write_timeout_secs as usize)?
            as u64,
    };
    if ws.idle_timeout_secs <= ws.ping_interval_secs {
        return Err(r.invalid(
            "api.ws.idle_timeout_secs",
            format!(
                "must be longer than api.ws.ping_interval_secs ({}), or every quiet socket is closed before its pong can arrive",
                ws.ping_interval_secs
            ),
        ));
    }
    Ok(ws)
}

/// `[gossip.tls]` and its `[gossip.tls.client]`, if present.
fn tls(r: &Reader<'_>) -> Result<Option<TlsConfig>, ConfigError> {
    if r.raw("gossip.tls").is_none() {
        return Ok(None);
    }
    let cert_file = r.required_path("gossip.tls.cert_file", "\"/etc/verdigris/cert.pem\"")?;
    let key_file = r.required_path("gossip.tls.key_file", "\"/etc/verdigris/key.pem\"")?;
    let client = match r.raw("gossip.tls.client") {
        None => None,
        Some(_) => Some(TlsClientConfig {
            cert_file: r.required_path("gossip.tls.client.cert_file", "\"client-cert.pem\"")?,
            key_file: r.required_path("gossip.tls.client.key_file", "\"client-key.pem\"")?,
        }),
    };
    Ok(Some(TlsConfig {
        cert_file,
        key_file,
        ca_file: r.path("gossip.tls.ca_file")?,
        insecure: r.bool("gossip.tls.insecure", false)?,
        client,
    }))
}

#[cfg(test)]
mod tests;
