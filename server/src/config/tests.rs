//! Tests of configuration loading.

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
        subscription_log_retention: 10_000,
        subscription_idle_secs: 600,
    };
    assert_eq!(cfg.db, db);
    let api = ApiConfig {
        addr: vec![sa("127.0.0.1:8080")],
        authz: None,
        endpoint_name: None,
        max_body_bytes: 16_777_216,
        query_timeout_secs: 60,
        max_concurrency: 128,
        ws: WsConfig::default(),
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
        snapshot_bootstrap: true,
        snapshot_min_bytes: 16 << 20,
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
    let text =
        "[db]\npath = \"state.db\"\nsubscriptions_path = \"/subs\"\n[api]\naddr = \"127.0.0.1:1\"";
    let (cfg, _) = load(text, &[]);
    assert_eq!(cfg.admin.path, PathBuf::from("admin.sock"));
    assert_eq!(cfg.db.subscriptions_dir(), PathBuf::from("/subs"));
}
