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

// ---- Schema: every key Verdigris knows, with Corrosion's aliases. ----

/// What a key holds; decides how an environment string is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Section,
    Str,
    Bool,
    Int,
    /// A list; comma-separated in the environment.
    List,
}

struct KeySpec {
    name: &'static str,
    aliases: &'static [&'static str],
    kind: Kind,
}

impl KeySpec {
    fn matches(&self, key: &str) -> bool {
        self.name == key || self.aliases.contains(&key)
    }
}

/// Known keys per section path (`""` is the top level).
#[rustfmt::skip]
const SCHEMA: &[(&str, &[KeySpec])] = {
    use Kind::*;
    const fn k(name: &'static str, kind: Kind) -> KeySpec { KeySpec { name, aliases: &[], kind } }
    const fn a(name: &'static str, aliases: &'static [&'static str], kind: Kind) -> KeySpec { KeySpec { name, aliases, kind } }
    &[
        ("", &[k("db", Section), k("api", Section), k("gossip", Section), k("admin", Section), k("perf", Section), k("log", Section)]),
        ("db", &[k("path", Str), k("schema_paths", List), k("subscriptions_path", Str), k("cache_size_kib", Int)]),
        ("api", &[a("addr", &["bind_addr"], List), a("authz", &["authorization"], Section), k("endpoint_name", Str), k("max_body_bytes", Int), k("query_timeout_secs", Int), k("max_concurrency", Int)]),
        ("api.authz", &[a("bearer-token", &["authorization", "bearer"], Str)]),
        ("gossip", &[a("addr", &["bind_addr"], Str), k("external_addr", Str), k("bootstrap", List), k("plaintext", Bool), k("tls", Section), k("cluster_id", Int), k("max_mtu", Int), k("idle_timeout_secs", Int), k("member_id", Int)]),
        ("gossip.tls", &[k("cert_file", Str), k("key_file", Str), k("ca_file", Str), k("insecure", Bool), k("client", Section)]),
        ("gossip.tls.client", &[k("cert_file", Str), k("key_file", Str)]),
        ("admin", &[a("path", &["uds_path"], Str)]),
        ("perf", &[k("processing_queue_len", Int), k("sql_tx_timeout", Int), k("min_sync_backoff", Int), k("max_sync_backoff", Int), k("apply_queue_timeout", Int), k("bcast_channel_len", Int), k("changes_channel_len", Int), k("broadcast_bytes_per_sec", Int)]),
        ("log", &[k("format", Str), k("colors", Bool)]),
    ]
};

/// Corrosion settings accepted but not used; each entry covers its whole subtree.
#[rustfmt::skip]
const IGNORED: &[&str] = &[
    "telemetry", "consul", "reaper", "api.pg", "gossip.client_addr", "gossip.disable_gso",
    "gossip.compression", "gossip.broadcast", "perf.apply_channel_len", "perf.empties_channel_len",
    "perf.clearbuf_channel_len", "perf.to_send_channel_len", "perf.notifications_channel_len",
    "perf.schedule_channel_len", "perf.foca_channel_len", "perf.wal_threshold_mb",
    "perf.partial_retry_backoff", "perf.apply_queue_min_batch_size", "perf.apply_queue_step_base",
    "perf.max_batch_size", "perf.apply_queue_batch_threshold_ratio",
];

fn section_keys(path: &str) -> &'static [KeySpec] {
    let found = SCHEMA.iter().find(|(p, _)| *p == path);
    found.map(|(_, keys)| *keys).unwrap_or(&[])
}

/// Hint listing what is valid in a section, for "unknown key" errors.
fn known_keys(path: &str) -> String {
    let names: Vec<&str> = section_keys(path).iter().map(|k| k.name).collect();
    match path {
        "" => format!("known sections: {}", names.join(", ")),
        _ => format!("known keys in [{path}]: {}", names.join(", ")),
    }
}

fn join(path: &str, key: &str) -> String {
    match path {
        "" => key.to_string(),
        _ => format!("{path}.{key}"),
    }
}

fn ignored_warning(key: &str, origin: &Origin) -> ConfigWarning {
    ConfigWarning(format!(
        "config key `{key}` {origin} is a Corrosion setting Verdigris does not use yet; it is ignored"
    ))
}

/// One warning per leaf of an ignored subtree (an empty table counts as a leaf).
fn warn_ignored(key: &str, value: &Value, origin: &Origin, warnings: &mut Vec<ConfigWarning>) {
    match value {
        Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                warn_ignored(&join(key, k), v, origin, warnings);
            }
        }
        _ => warnings.push(ignored_warning(key, origin)),
    }
}

/// Check the section `raw` at `path` against the schema and copy it into `out`
/// under canonical key names, dropping (with a warning) ignored Corrosion keys.
fn normalize(
    raw: &Table,
    path: &str,
    origin: &Origin,
    out: &mut Table,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(), ConfigError> {
    let mut seen: HashMap<&'static str, &str> = HashMap::new();
    for (raw_key, value) in raw {
        let dotted = join(path, raw_key);
        if IGNORED.contains(&dotted.as_str()) {
            warn_ignored(&dotted, value, origin, warnings);
            continue;
        }
        let Some(spec) = section_keys(path).iter().find(|s| s.matches(raw_key)) else {
            let known = known_keys(path);
            return Err(ConfigError::UnknownKey {
                key: dotted,
                origin: origin.clone(),
                known,
            });
        };
        if let Some(prev) = seen.insert(spec.name, raw_key) {
            let prev = join(path, prev);
            return Err(ConfigError::Conflict {
                message: format!("config keys `{prev}` and `{dotted}` {origin} are the same setting (aliases); keep only one of them"),
            });
        }
        let value = match (spec.kind, value) {
            (Kind::Section, Value::Table(sub)) => {
                let mut sub_out = Table::new();
                // Recurse under the canonical name, so a section alias (`[api.authorization]`)
                // reads like the section it stands for.
                normalize(sub, &join(path, spec.name), origin, &mut sub_out, warnings)?;
                Value::Table(sub_out)
            }
            (Kind::Section, other) => {
                let problem = format!("must be a section ([{dotted}]), got {}", describe(other));
                return Err(ConfigError::InvalidValue {
                    key: dotted,
                    origin: origin.clone(),
                    problem,
                });
            }
            (_, v) => v.clone(),
        };
        out.insert(spec.name.to_string(), value);
    }
    Ok(())
}

// ---- Environment overrides ----

enum EnvKey {
    /// A settable key: canonical path segments and kind.
    Known(Vec<&'static str>, Kind),
    /// An ignored Corrosion key (dotted).
    Ignored(String),
    /// Not a key: the dotted name as written, and a hint.
    Unknown(String, String),
}

/// Resolve a variable name without its prefix, e.g. `API__AUTHZ__BEARER_TOKEN`.
fn resolve_env_key(name: &str) -> EnvKey {
    let segs: Vec<String> = name.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let mut canon: Vec<&'static str> = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let path = canon.join(".");
        let as_written = || join(&path, &segs[i..].join("."));
        if IGNORED.contains(&join(&path, seg).as_str()) {
            return EnvKey::Ignored(as_written());
        }
        let env_form = |n: &&str| n.replace('-', "_") == *seg;
        let keys = section_keys(&path);
        let Some(spec) = keys
            .iter()
            .find(|s| env_form(&s.name) || s.aliases.iter().any(env_form))
        else {
            return EnvKey::Unknown(as_written(), known_keys(&path));
        };
        canon.push(spec.name);
        match (spec.kind, i + 1 == segs.len()) {
            (Kind::Section, false) => {}
            (Kind::Section, true) => {
                let section = canon.join(".");
                let hint = format!("`{section}` is a section; {}", known_keys(&section));
                return EnvKey::Unknown(section, hint);
            }
            (kind, true) => return EnvKey::Known(canon, kind),
            (_, false) => return EnvKey::Unknown(as_written(), known_keys(&path)),
        }
    }
    EnvKey::Unknown(name.to_ascii_lowercase(), known_keys(""))
}

/// Convert an environment string to a TOML value of the key's kind.
fn env_value(kind: Kind, key: &str, var: &str, value: &str) -> Result<Value, ConfigError> {
    let invalid = |what: &str| ConfigError::InvalidValue {
        key: key.to_string(),
        origin: Origin::Env(var.to_string()),
        problem: format!("must be {what}, got {value:?}"),
    };
    Ok(match kind {
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => return Err(invalid("`true` or `false`")),
        },
        Kind::Int => Value::Integer(value.trim().parse().map_err(|_| invalid("an integer"))?),
        Kind::List => Value::Array(
            (value.split(',').map(str::trim).filter(|s| !s.is_empty()))
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Str | Kind::Section => Value::String(value.to_string()),
    })
}

/// Set `value` at `path`, creating intermediate sections as needed.
fn set_path(table: &mut Table, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = table.entry(first.to_string());
            if let Value::Table(sub) = entry.or_insert_with(|| Table::new().into()) {
                set_path(sub, rest, value);
            }
        }
    }
}

/// One recognised environment variable, ready to apply.
struct EnvOverride {
    path: Vec<&'static str>,
    kind: Kind,
    var: String,
    value: String,
}

/// Apply environment overrides to the normalized table (unprefixed first, so
/// prefixed variables win). Returns which variable set which dotted key.
fn apply_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<HashMap<String, String>, ConfigError> {
    const SECTIONS: &[&str] = &["db", "api", "gossip", "admin", "perf", "log"];
    // Unprefixed overrides in [0], prefixed in [1]; applied in that order.
    let mut forms: [Vec<EnvOverride>; 2] = Default::default();
    for (var, value) in env {
        let (name, prefixed) = match var.strip_prefix(ENV_PREFIX) {
            Some(rest) => (rest, true),
            None => (var.as_str(), false),
        };
        let first = name
            .split("__")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !name.contains("__") || (!prefixed && !SECTIONS.contains(&first.as_str())) {
            continue;
        }
        match resolve_env_key(name) {
            EnvKey::Known(path, kind) => forms[usize::from(prefixed)].push(EnvOverride {
                path,
                kind,
                var,
                value,
            }),
            EnvKey::Ignored(key) => warnings.push(ignored_warning(&key, &Origin::Env(var))),
            EnvKey::Unknown(key, known) if prefixed => {
                return Err(ConfigError::UnknownEnvVar { var, key, known })
            }
            EnvKey::Unknown(..) => {}
        }
    }
    let mut origins = HashMap::new();
    for mut form in forms {
        form.sort_by(|a, b| a.var.cmp(&b.var));
        let mut seen: HashMap<String, String> = HashMap::new();
        for o in form {
            let dotted = o.path.join(".");
            if let Some(other) = seen.insert(dotted.clone(), o.var.clone()) {
                let var = &o.var;
                return Err(ConfigError::Conflict {
                    message: format!("environment variables `{other}` and `{var}` both set config key `{dotted}`; unset one of them"),
                });
            }
            set_path(
                table,
                &o.path,
                env_value(o.kind, &dotted, &o.var, &o.value)?,
            );
            origins.insert(dotted, o.var);
        }
    }
    Ok(origins)
}

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
    })
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
mod tests {
    use super::*;

    type Env = Vec<(String, String)>;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> (Config, Vec<String>) {
        match Config::from_toml_str(text, env(vars)) {
            Ok((cfg, w)) => (cfg, w.iter().map(ToString::to_string).collect()),
            Err(e) => panic!("config should load: {e}\n{text}"),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    const MINIMAL: &str = "[db]\npath = \"/data/state.db\"\n[api]\naddr = \"127.0.0.1:8080\"\n";

    fn with(extra: &str) -> String {
        format!("{MINIMAL}{extra}")
    }

    const CORROSION_FULL: &str = r#"
[db]
path = "/var/lib/corrosion/state.db"
schema_paths = ["/etc/corrosion/schema"]

[gossip]
addr = "[::]:8787"
external_addr = "[fdaa::3]:8787"
bootstrap = ["[fdaa::4]:8787", "corrosion.internal:8787"]
plaintext = true
max_mtu = 1372
disable_gso = true
compression = { algorithm = "zstd", level = 3 }

[api]
addr = "[::]:8080"

[api.pg]
addr = "[::]:5470"

[admin]
uds_path = "/var/run/corrosion/admin.sock"

[telemetry]
prometheus.addr = "0.0.0.0:9090"

[consul.client]
address = "127.0.0.1:8500"

[reaper.tables.x]
ttl = 3600

[perf]
wal_threshold_mb = 50
apply_queue_timeout = 20

[log]
format = "json"
colors = false
"#;

    #[test]
    fn defaults_fill_unset_keys() {
        let (cfg, warnings) = load(MINIMAL, &[]);
        assert!(warnings.is_empty());
        let db = DbConfig {
            path: "/data/state.db".into(),
            schema_paths: vec![],
            subscriptions_path: None,
            cache_size_kib: -1_048_576,
        };
        assert_eq!(cfg.db, db);
        let api = ApiConfig {
            addr: vec![sa("127.0.0.1:8080")],
            authz: None,
            endpoint_name: None,
            max_body_bytes: 16_777_216,
            query_timeout_secs: 60,
            max_concurrency: 128,
        };
        assert_eq!(cfg.api, api);
        // Neither TLS nor plaintext is fine: the node runs single-node.
        let gossip = GossipConfig {
            addr: sa("127.0.0.1:8787"),
            external_addr: None,
            bootstrap: vec![],
            plaintext: false,
            tls: None,
            cluster_id: 0,
            max_mtu: None,
            idle_timeout_secs: 30,
            member_id: None,
        };
        assert_eq!(cfg.gossip, gossip);
        let perf = PerfConfig {
            processing_queue_len: 20_000,
            sql_tx_timeout: 60,
            min_sync_backoff: 1,
            max_sync_backoff: 15,
            apply_queue_timeout: 10,
            bcast_channel_len: 512,
            changes_channel_len: 1024,
            broadcast_bytes_per_sec: 10_485_760,
        };
        assert_eq!(cfg.perf, perf);
        let log = LogConfig {
            format: LogFormat::Plaintext,
            colors: true,
        };
        assert_eq!(cfg.log, log);
    }

    #[test]
    fn embedded_default_parses() {
        let (cfg, warnings) = Config::default_with_env(Env::new()).expect("embedded default");
        assert!(warnings.is_empty());
        assert_eq!(cfg.db.path, PathBuf::from("verdigris-data/state.db"));
        assert_eq!(
            cfg.db.schema_paths,
            vec![PathBuf::from("verdigris-data/schema")]
        );
        assert_eq!(cfg.api.addr, vec![sa("127.0.0.1:8080")]);
        assert!(cfg.gossip.plaintext);
        assert_eq!(cfg.admin.path, PathBuf::from("verdigris-data/admin.sock"));
        let vars = env(&[("VERDIGRIS_API__ADDR", "127.0.0.1:9000")]);
        let (cfg, _) = Config::default_with_env(vars).expect("default with env");
        assert_eq!(cfg.api.addr, vec![sa("127.0.0.1:9000")]);
    }

    #[test]
    fn accepts_addr_forms_and_corrosion_aliases() {
        let text = "[db]\npath = \"x.db\"\n[api]\naddr = [\"127.0.0.1:1\", \"[::1]:2\"]";
        assert_eq!(
            load(text, &[]).0.api.addr,
            vec![sa("127.0.0.1:1"), sa("[::1]:2")]
        );
        let text = "[db]\npath = \"x\"\n[api]\nbind_addr = \"127.0.0.1:3\"\n[gossip]\nbind_addr = \"0.0.0.0:4\"";
        let (cfg, _) = load(text, &[]);
        assert_eq!(
            (cfg.api.addr[0], cfg.gossip.addr),
            (sa("127.0.0.1:3"), sa("0.0.0.0:4"))
        );
        for spelling in ["bearer-token", "authorization", "bearer"] {
            let (cfg, _) = load(
                &with(&format!("[api.authz]\n{spelling} = \"s3cret\"\n")),
                &[],
            );
            let authz = cfg.api.authz.expect("authz");
            assert_eq!(authz.bearer_token.as_deref(), Some("s3cret"), "{spelling}");
            assert!(
                !format!("{authz:?}").contains("s3cret"),
                "Debug must redact the token"
            );
        }
        let tls = "[gossip.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let client = "[gossip.tls.client]\ncert_file = \"cc\"\nkey_file = \"ck\"";
        let tls_cfg = load(&with(&format!("{tls}{client}")), &[])
            .0
            .gossip
            .tls
            .expect("tls");
        assert_eq!(
            (tls_cfg.cert_file, tls_cfg.insecure),
            (PathBuf::from("c.pem"), false)
        );
        assert_eq!(
            tls_cfg.client.map(|c| c.key_file),
            Some(PathBuf::from("ck"))
        );
        assert_eq!(
            load(&with("[gossip]\nmax_mtu = 1200"), &[])
                .0
                .gossip
                .max_mtu,
            Some(1200)
        );
    }

    #[test]
    fn corrosion_config_loads_with_warnings() {
        let (cfg, warnings) = load(CORROSION_FULL, &[]);
        for key in [
            "telemetry.prometheus.addr",
            "consul.client.address",
            "reaper.tables.x.ttl",
            "api.pg.addr",
            "gossip.compression.algorithm",
            "gossip.disable_gso",
            "perf.wal_threshold_mb",
        ] {
            let hit = |w: &String| w.contains(&format!("`{key}`")) && w.contains("it is ignored");
            assert!(
                warnings.iter().any(hit),
                "no warning for {key}: {warnings:?}"
            );
        }
        assert_eq!(
            cfg.admin.path,
            PathBuf::from("/var/run/corrosion/admin.sock")
        );
        assert_eq!(
            cfg.gossip.bootstrap,
            vec!["[fdaa::4]:8787", "corrosion.internal:8787"]
        );
        assert_eq!(cfg.gossip.external_addr, Some(sa("[fdaa::3]:8787")));
        assert_eq!(
            (cfg.gossip.max_mtu, cfg.perf.apply_queue_timeout),
            (Some(1372), 20)
        );
        assert_eq!(
            cfg.log,
            LogConfig {
                format: LogFormat::Json,
                colors: false
            }
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("x.toml", Some(MINIMAL.replace("path", "pth"))),
            ("bad.toml", Some("[db\npath = 1".to_string())),
            ("nope.toml", None),
        ];
        let mut errors = Vec::new();
        for (name, text) in cases {
            let file = dir.path().join(name);
            if let Some(text) = text {
                std::fs::write(&file, text).expect("write");
            }
            let err = Config::load(&file, Env::new()).expect_err(name).to_string();
            assert!(err.contains(&file.display().to_string()), "{err}");
            errors.push(err);
        }
        assert!(
            errors[0].contains("unknown config key `db.pth`"),
            "{}",
            errors[0]
        );
        let known = "known keys in [db]: path, schema_paths, subscriptions_path, cache_size_kib";
        assert!(errors[0].contains(known), "{}", errors[0]);
        assert!(errors[1].contains("invalid TOML"), "{}", errors[1]);
        assert!(
            errors[2].contains("cannot read config file"),
            "{}",
            errors[2]
        );
    }

    /// (config text, environment, substrings the error message must contain)
    type ErrCase = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );

    #[rustfmt::skip]
    const ERROR_CASES: &[ErrCase] = &[
        // Unknown keys and sections.
        ("[foo]\nbar = 1", &[], &["unknown config key `foo`", "known sections: db, api"]),
        ("[gossip.tls.client]\ncert = \"c\"", &[], &["`gossip.tls.client.cert`", "known keys in [gossip.tls.client]"]),
        ("[db.x]", &[], &["`db.x`"]),
        // Wrong types and values.
        ("![db]\npath = \"x\"\n[api]\naddr = 42", &[], &["config key `api.addr`", "like \"127.0.0.1:8080\"", "or a list of them, got 42"]),
        ("![db]\npath = \"x\"\n[api]\naddr = []", &[], &["`api.addr`", "at least one address"]),
        ("![db]\npath = \"x\"\n[api]\naddr = [\"127.0.0.1:1\", \"nope\"]", &[], &["`api.addr`", "\"nope\""]),
        ("[gossip]\naddr = \"localhost:8787\"", &[], &["`gossip.addr`", "\"localhost:8787\""]),
        ("[gossip]\nplaintext = \"yes\"", &[], &["`gossip.plaintext`", "`true` or `false`", "got \"yes\""]),
        ("[gossip]\ncluster_id = 70000", &[], &["`gossip.cluster_id`", "from 0 to 65535, got 70000"]),
        ("[gossip]\nmax_mtu = 1000", &[], &["`gossip.max_mtu`", "at least 1200", "got 1000"]),
        ("[perf]\nbcast_channel_len = 0", &[], &["`perf.bcast_channel_len`", "got 0"]),
        ("[perf]\nmin_sync_backoff = 20", &[], &["`perf.min_sync_backoff`", "(15)", "got 20"]),
        ("[log]\nformat = \"xml\"", &[], &["`log.format`", "\"plaintext\" or \"json\"", "\"xml\""]),
        ("!db = 3", &[], &["`db`", "must be a section"]),
        ("![db]\npath = [\"a\"]\n[api]\naddr = \"127.0.0.1:1\"", &[], &["`db.path`", "path string"]),
        ("![api]\naddr = \"127.0.0.1:1\"", &[], &["`db.path` is missing", "VERDIGRIS_DB__PATH"]),
        // Conflicts.
        ("![db]\npath = \"x\"\n[api]\naddr = \"127.0.0.1:1\"\nbind_addr = \"127.0.0.1:2\"", &[], &["`api.addr`", "`api.bind_addr`", "keep only one"]),
        ("[gossip]\nplaintext = true\n[gossip.tls]\ncert_file = \"c\"\nkey_file = \"k\"", &[], &["`gossip.tls`", "`gossip.plaintext = true`", "pick one"]),
        ("[gossip.tls]\ncert_file = \"c.pem\"", &[], &["`gossip.tls.key_file` is missing"]),
        // Environment: errors name the variable.
        ("", &[("VERDIGRIS_DB__PTH", "x")], &["`VERDIGRIS_DB__PTH`", "`db.pth`", "known keys in [db]"]),
        ("", &[("VERDIGRIS_FOO__BAR", "x")], &["`VERDIGRIS_FOO__BAR`", "known sections"]),
        ("", &[("VERDIGRIS_API__AUTHZ", "x")], &["`VERDIGRIS_API__AUTHZ`", "is a section"]),
        ("", &[("VERDIGRIS_GOSSIP__PLAINTEXT", "yes")], &["`VERDIGRIS_GOSSIP__PLAINTEXT`", "`true` or `false`"]),
        ("", &[("VERDIGRIS_API__MAX_CONCURRENCY", "lots")], &["`VERDIGRIS_API__MAX_CONCURRENCY`", "integer"]),
        ("", &[("VERDIGRIS_API__ADDR", "nope:1")], &["`VERDIGRIS_API__ADDR`", "\"nope:1\""]),
        ("", &[("GOSSIP__MAX_MTU", "9")], &["`GOSSIP__MAX_MTU`", "at least 1200"]),
        ("", &[("VERDIGRIS_API__ADDR", "127.0.0.1:1"), ("VERDIGRIS_API__BIND_ADDR", "127.0.0.1:2")], &["VERDIGRIS_API__BIND_ADDR", "unset one"]),
    ];

    #[test]
    fn bad_config_is_rejected_with_helpful_errors() {
        for (text, vars, needles) in ERROR_CASES {
            // A leading `!` means "use the text as is"; otherwise it extends MINIMAL.
            let text = match text.strip_prefix('!') {
                Some(raw) => raw.to_string(),
                None => with(text),
            };
            let err = match Config::from_toml_str(&text, env(vars)) {
                Ok(_) => panic!("config should be rejected:\n{text}\n{vars:?}"),
                Err(e) => e.to_string(),
            };
            for needle in *needles {
                assert!(err.contains(needle), "{needle:?} not in error: {err}");
            }
        }
    }

    #[test]
    fn env_overrides_both_forms_with_precedence() {
        let vars = [
            ("DB__PATH", "/unprefixed/state.db"),
            ("VERDIGRIS_DB__PATH", "/prefixed/state.db"),
            ("api__addr", "127.0.0.1:9001"),
            ("GOSSIP__CLUSTER_ID", "7"),
            ("VERDIGRIS_GOSSIP__PLAINTEXT", "TRUE"),
            ("VERDIGRIS_api__authz__BEARER_TOKEN", "s3cret"),
            ("VERDIGRIS_PERF__BCAST_CHANNEL_LEN", "7"),
            ("VERDIGRIS_LOG__FORMAT", "json"),
        ];
        let (cfg, _) = load(MINIMAL, &vars);
        assert_eq!(cfg.db.path, PathBuf::from("/prefixed/state.db"));
        assert_eq!(cfg.api.addr, vec![sa("127.0.0.1:9001")]);
        assert_eq!((cfg.gossip.cluster_id, cfg.gossip.plaintext), (7, true));
        assert_eq!(
            cfg.api.authz.and_then(|a| a.bearer_token).as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            (cfg.perf.bcast_channel_len, cfg.log.format),
            (7, LogFormat::Json)
        );
        // The admin socket default follows the overridden db.path.
        assert_eq!(cfg.admin.path, PathBuf::from("/prefixed/admin.sock"));
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let vars = [
            (
                "VERDIGRIS_GOSSIP__BOOTSTRAP",
                "127.0.0.1:8788, 127.0.0.1:8789",
            ),
            ("VERDIGRIS_DB__SCHEMA_PATHS", "a.sql,schemas/"),
            ("VERDIGRIS_API__ADDR", "127.0.0.1:1,[::1]:2"),
        ];
        let (cfg, _) = load(MINIMAL, &vars);
        assert_eq!(
            cfg.gossip.bootstrap,
            vec!["127.0.0.1:8788", "127.0.0.1:8789"]
        );
        assert_eq!(
            cfg.db.schema_paths,
            vec![PathBuf::from("a.sql"), PathBuf::from("schemas/")]
        );
        assert_eq!(cfg.api.addr, vec![sa("127.0.0.1:1"), sa("[::1]:2")]);
    }

    #[test]
    fn unrelated_env_is_ignored() {
        let vars = [
            ("DB__PTH", "x"),
            ("FOO__BAR", "x"),
            ("PATH", "/bin"),
            ("VERDIGRIS_LOG", "debug"),
        ];
        let (cfg, warnings) = load(MINIMAL, &vars);
        assert_eq!(cfg.db.path, PathBuf::from("/data/state.db"));
        assert!(warnings.is_empty(), "{warnings:?}");
        let (_, warnings) = load(MINIMAL, &[("PERF__WAL_THRESHOLD_MB", "5")]);
        assert!(
            warnings[0].contains("`perf.wal_threshold_mb`"),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains("`PERF__WAL_THRESHOLD_MB`"),
            "{warnings:?}"
        );
    }

    #[test]
    fn admin_path_and_subscriptions_dir_defaults() {
        let (cfg, _) = load(MINIMAL, &[]);
        assert_eq!(cfg.admin.path, PathBuf::from("/data/admin.sock"));
        assert_eq!(
            cfg.db.subscriptions_dir(),
            PathBuf::from("/data/subscriptions")
        );
        let text = "[db]\npath = \"state.db\"\nsubscriptions_path = \"/subs\"\n[api]\naddr = \"127.0.0.1:1\"";
        let (cfg, _) = load(text, &[]);
        assert_eq!(cfg.admin.path, PathBuf::from("admin.sock"));
        assert_eq!(cfg.db.subscriptions_dir(), PathBuf::from("/subs"));
    }
}
