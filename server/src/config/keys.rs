//! Every key Verdigris knows (with Corrosion's aliases), normalization of a parsed file, and
//! environment overrides.

use super::*;

// ---- Schema: every key Verdigris knows, with Corrosion's aliases. ----

/// What a key holds; decides how an environment string is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Section,
    Str,
    Bool,
    Int,
    /// A list; comma-separated in the environment.
    List,
}

pub(super) struct KeySpec {
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
pub(super) const SCHEMA: &[(&str, &[KeySpec])] = {
    use Kind::*;
    const fn k(name: &'static str, kind: Kind) -> KeySpec { KeySpec { name, aliases: &[], kind } }
    const fn a(name: &'static str, aliases: &'static [&'static str], kind: Kind) -> KeySpec { KeySpec { name, aliases, kind } }
    &[
        ("", &[k("db", Section), k("api", Section), k("gossip", Section), k("admin", Section), k("perf", Section), k("log", Section), k("watchdog", Section), k("snapshots", Section)]),
        ("db", &[k("path", Str), k("schema_paths", List), k("subscriptions_path", Str), k("cache_size_kib", Int), k("subscription_log_retention", Int), k("subscription_idle_secs", Int)]),
        ("api", &[a("addr", &["bind_addr"], List), a("authz", &["authorization"], Section), k("endpoint_name", Str), k("max_body_bytes", Int), k("query_timeout_secs", Int), k("max_concurrency", Int), k("ws", Section)]),
        ("api.ws", &[k("max_message_bytes", Int), k("max_subscriptions", Int), k("max_sockets", Int), k("max_in_flight", Int), k("ping_interval_secs", Int), k("idle_timeout_secs", Int), k("write_timeout_secs", Int)]),
        ("api.authz", &[a("bearer-token", &["authorization", "bearer"], Str)]),
        ("gossip", &[a("addr", &["bind_addr"], Str), k("external_addr", Str), k("bootstrap", List), k("plaintext", Bool), k("tls", Section), k("cluster_id", Int), k("max_mtu", Int), k("idle_timeout_secs", Int), k("member_id", Int), k("snapshot_bootstrap", Bool), k("snapshot_min_bytes", Int)]),
        ("gossip.tls", &[k("cert_file", Str), k("key_file", Str), k("ca_file", Str), k("insecure", Bool), k("client", Section)]),
        ("gossip.tls.client", &[k("cert_file", Str), k("key_file", Str)]),
        ("admin", &[a("path", &["uds_path"], Str)]),
        ("perf", &[k("processing_queue_len", Int), k("sql_tx_timeout", Int), k("min_sync_backoff", Int), k("max_sync_backoff", Int), k("apply_queue_timeout", Int), k("bcast_channel_len", Int), k("changes_channel_len", Int), k("broadcast_bytes_per_sec", Int)]),
        ("log", &[k("format", Str), k("colors", Bool)]),
        ("watchdog", &[k("runtime_stall_secs", Int), k("writer_stall_secs", Int), k("exit", Bool), k("exit_after_secs", Int)]),
        ("snapshots", &[k("dir", Str), k("interval_secs", Int), k("keep", Int), k("max_age_secs", Int)]),
    ]
};

/// Corrosion settings accepted but not used; each entry covers its whole subtree.
#[rustfmt::skip]
pub(super) const IGNORED: &[&str] = &[
    "telemetry", "consul", "reaper", "api.pg", "gossip.client_addr", "gossip.disable_gso",
    "gossip.compression", "gossip.broadcast", "perf.apply_channel_len", "perf.empties_channel_len",
    "perf.clearbuf_channel_len", "perf.to_send_channel_len", "perf.notifications_channel_len",
    "perf.schedule_channel_len", "perf.foca_channel_len", "perf.wal_threshold_mb",
    "perf.partial_retry_backoff", "perf.apply_queue_min_batch_size", "perf.apply_queue_step_base",
    "perf.max_batch_size", "perf.apply_queue_batch_threshold_ratio",
];

pub(super) fn section_keys(path: &str) -> &'static [KeySpec] {
    let found = SCHEMA.iter().find(|(p, _)| *p == path);
    found.map(|(_, keys)| *keys).unwrap_or(&[])
}

/// Hint listing what is valid in a section, for "unknown key" errors.
pub(super) fn known_keys(path: &str) -> String {
    let names: Vec<&str> = section_keys(path).iter().map(|k| k.name).collect();
    match path {
        "" => format!("known sections: {}", names.join(", ")),
        _ => format!("known keys in [{path}]: {}", names.join(", ")),
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    match path {
        "" => key.to_string(),
        _ => format!("{path}.{key}"),
    }
}

pub(super) fn ignored_warning(key: &str, origin: &Origin) -> ConfigWarning {
    ConfigWarning(format!(
        "config key `{key}` {origin} is a Corrosion setting Verdigris does not use yet; it is ignored"
    ))
}

/// One warning per leaf of an ignored subtree (an empty table counts as a leaf).
pub(super) fn warn_ignored(
    key: &str,
    value: &Value,
    origin: &Origin,
    warnings: &mut Vec<ConfigWarning>,
) {
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
pub(super) fn normalize(
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

pub(super) enum EnvKey {
    /// A settable key: canonical path segments and kind.
    Known(Vec<&'static str>, Kind),
    /// An ignored Corrosion key (dotted).
    Ignored(String),
    /// Not a key: the dotted name as written, and a hint.
    Unknown(String, String),
}

/// Resolve a variable name without its prefix, e.g. `API__AUTHZ__BEARER_TOKEN`.
pub(super) fn resolve_env_key(name: &str) -> EnvKey {
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
pub(super) fn env_value(
    kind: Kind,
    key: &str,
    var: &str,
    value: &str,
) -> Result<Value, ConfigError> {
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
pub(super) fn set_path(table: &mut Table, path: &[&str], value: Value) {
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
pub(super) struct EnvOverride {
    path: Vec<&'static str>,
    kind: Kind,
    var: String,
    value: String,
}

/// Apply environment overrides to the normalized table (unprefixed first, so
/// prefixed variables win). Returns which variable set which dotted key.
pub(super) fn apply_env(
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
