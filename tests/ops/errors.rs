//! Startup and configuration errors on real processes: each is one `error:` line that names
//! the setting and the fix, the exit status is non-zero, and the node never half-starts (no
//! startup lines, no silent fallback to standalone).

use crate::support::{NodeDir, StartFailure, SIMPLE_SCHEMA};
use std::net::UdpSocket;

/// The failure of a node that must not start; checks it ended with one error line.
fn refused(dir: &NodeDir) -> (StartFailure, String) {
    let f = match dir.try_start() {
        Ok(_) => panic!("the node started despite a bad configuration"),
        Err(f) => f,
    };
    let status = f.status.expect("the node exited (it did not hang)");
    assert!(!status.success(), "{status}");
    assert!(
        !f.stdout.contains("admin socket:") && !f.stdout.contains("api: "),
        "printed startup lines before failing:\n{}",
        f.stdout
    );
    let errors: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{}", f.stderr);
    let line = errors[0].to_string();
    (f, line)
}

fn mentions(line: &str, needles: &[&str]) {
    for n in needles {
        assert!(line.contains(n), "{n:?} missing from: {line}");
    }
}

#[test]
fn a_gossip_port_in_use_is_an_error_not_a_standalone_node() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let dir = NodeDir::builder().schema(SIMPLE_SCHEMA).build();
    let cfg = std::fs::read_to_string(&dir.config).unwrap();
    dir.write_config(&cfg.replace(
        "addr = \"127.0.0.1:0\"\nplaintext",
        &format!("addr = \"127.0.0.1:{port}\"\nplaintext"),
    ));
    let (_, line) = refused(&dir);
    mentions(
        &line,
        &[
            "gossip.addr",
            &format!("127.0.0.1:{port}"),
            "in use",
            "free port",
        ],
    );
}

#[test]
fn an_unreadable_certificate_names_its_setting() {
    let dir = NodeDir::builder().schema(SIMPLE_SCHEMA).build();
    let missing = dir.path().join("no-such-cert.pem");
    let cfg = std::fs::read_to_string(&dir.config)
        .unwrap()
        .replace("plaintext = true\n", "")
        + &format!(
            "[gossip.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\ninsecure = true\n",
            missing.display(),
            dir.path().join("key.pem").display()
        );
    dir.write_config(&cfg);
    let (_, line) = refused(&dir);
    mentions(
        &line,
        &[
            "gossip.tls.cert_file",
            &missing.display().to_string(),
            "readable",
            "verdigris tls",
        ],
    );
}

#[test]
fn a_schema_file_that_does_not_parse_names_the_file() {
    let dir = NodeDir::builder()
        .schema("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT\n")
        .build();
    let (_, line) = refused(&dir);
    let file = dir.schema_dir.join("schema.sql").display().to_string();
    mentions(
        &line,
        &[
            "schema file",
            &file,
            "db.schema_paths",
            "does not parse",
            "fix the SQL",
        ],
    );
}

#[test]
fn a_data_directory_without_write_permission_names_db_path() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = NodeDir::builder().schema(SIMPLE_SCHEMA).build();
    let ro = dir.path().join("readonly");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let db = ro.join("data").join("state.db");
    let cfg = std::fs::read_to_string(&dir.config).unwrap();
    dir.write_config(&cfg.replace(&dir.db.display().to_string(), &db.display().to_string()));
    // Root ignores permissions: run the node as `nobody` then, from a copy of the binary it
    // can reach (the build directory usually sits in root's home).
    let root = unsafe { libc::geteuid() } == 0;
    let bin_dir = tempfile::tempdir().unwrap();
    let mut cmd = if root {
        for p in [dir.path(), bin_dir.path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let bin = bin_dir.path().join("verdigris");
        if std::fs::hard_link(crate::support::BIN, &bin).is_err() {
            std::fs::copy(crate::support::BIN, &bin).unwrap();
        }
        let mut c = std::process::Command::new(bin);
        c.uid(65534).gid(65534);
        c
    } else {
        std::process::Command::new(crate::support::BIN)
    };
    let out = cmd
        .args(["-c", dir.config.to_str().unwrap(), "agent"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running the agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", out.status);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    mentions(
        errors[0],
        &[
            "cannot write the data directory",
            "db.path",
            &db.display().to_string(),
            "writable",
        ],
    );
}
