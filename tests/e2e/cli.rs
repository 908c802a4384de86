//! The command line: `--help` for every subcommand, and the output formats of `exec`
//! (`Rows affected: N`, `Version: N`) and `query` (pipe-separated rows, NULL as empty, BLOBs as
//! `x'hex'`, optional column header), including errors and parameters.

use crate::support::{run_cli, NodeDir};

#[test]
fn every_subcommand_has_help() {
    let top = run_cli(&["--help"]);
    let text = top.ok();
    for sub in [
        "agent", "exec", "query", "reload", "backup", "restore", "cluster", "subs", "sync",
        "actor", "log", "tls",
    ] {
        assert!(text.contains(sub), "top-level help lists {sub}:\n{text}");
        let out = run_cli(&[sub, "--help"]);
        let help = out.ok();
        assert!(help.contains("Usage"), "{sub} --help:\n{help}");
        assert!(
            help.contains(sub),
            "{sub} --help names the command:\n{help}"
        );
        let out = run_cli(&["help", sub]);
        assert!(out.ok().contains("Usage"), "help {sub}");
    }
    let out = run_cli(&["--version"]);
    assert!(out.ok().contains("verdigris"), "{}", out.stdout);
    let out = run_cli(&["no-such-verb"]);
    assert!(out.failed().contains("no-such-verb"), "{}", out.stderr);
}

#[test]
fn exec_prints_rows_affected_and_version() {
    let dir = NodeDir::with_schema(
        "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER, c BLOB);",
    );
    let node = dir.start();
    let out = node.cli(&[
        "exec",
        "INSERT INTO t (id, a) VALUES (1, 'one'), (2, 'two')",
    ]);
    let text = out.ok();
    assert!(text.contains("Rows affected: 2"), "{text}");
    assert!(text.lines().any(|l| l.trim() == "Version: 1"), "{text}");

    // Parameters (bound as text; b has INTEGER affinity so '7' becomes 7).
    let out = node.cli(&[
        "exec",
        "INSERT INTO t (id, a, b) VALUES (?, ?, ?)",
        "-p",
        "3",
        "-p",
        "x|y",
        "--param",
        "7",
    ]);
    let text = out.ok();
    assert!(text.contains("Rows affected: 1"), "{text}");
    assert!(text.lines().any(|l| l.trim() == "Version: 2"), "{text}");

    // No replicated change: no numeric version.
    let out = node.cli(&["exec", "UPDATE t SET a = 'one' WHERE id = 1"]);
    let text = out.ok();
    assert!(text.contains("Rows affected: 1"), "{text}");
    let version_line = text
        .lines()
        .find(|l| l.starts_with("Version:"))
        .unwrap_or_else(|| panic!("no Version line: {text}"));
    assert!(
        !version_line.chars().any(|c| c.is_ascii_digit()),
        "a no-op has no version number: {version_line}"
    );

    // Errors: non-zero exit, the message on stderr, nothing written.
    let out = node.cli(&["exec", "INSERT INTO missing_tbl VALUES (1)"]);
    assert!(out.failed().contains("missing_tbl"), "{}", out.stderr);
    let out = node.cli(&["exec", "INSERT INTO t (id) VALUES (?)"]);
    assert!(out.failed().contains("parameter"), "{}", out.stderr);
    let out = node.cli(&["query", "SELECT count(*) FROM t"]);
    assert_eq!(out.ok(), "3\n");
}

#[test]
fn query_prints_pipe_separated_rows() {
    let dir = NodeDir::with_schema(
        "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b REAL, c BLOB);",
    );
    let node = dir.start();
    node.cli(&[
        "exec",
        "INSERT INTO t (id, a, b, c) VALUES (1, 'one', 1.5, x'00ff10'), (2, NULL, NULL, NULL), (3, 'ünï', -2.0, x'')",
    ])
    .ok();
    let out = node.cli(&["query", "SELECT id, a, b, c FROM t ORDER BY id"]);
    assert_eq!(out.ok(), "1|one|1.5|x'00ff10'\n2|||\n3|ünï|-2.0|x''\n");

    let out = node.cli(&[
        "query",
        "--columns",
        "SELECT id, a AS name FROM t WHERE id < 3 ORDER BY id",
    ]);
    assert_eq!(out.ok(), "id|name\n1|one\n2|\n");

    let out = node.cli(&[
        "query",
        "SELECT a FROM t WHERE id = ? OR a = ?",
        "-p",
        "3",
        "-p",
        "one",
    ]);
    let mut lines: Vec<&str> = out.ok().lines().collect();
    lines.sort();
    assert_eq!(lines, ["one", "ünï"]);

    let out = node.cli(&["query", "SELECT id FROM t WHERE id > 100"]);
    assert_eq!(out.ok(), "", "no rows: no output");
    let out = node.cli(&["query", "--columns", "SELECT id FROM t WHERE id > 100"]);
    assert_eq!(out.ok(), "id\n", "no rows: header only");

    // Errors before and during the stream: non-zero exit, message on stderr.
    let out = node.cli(&["query", "SELECT * FROM missing_tbl"]);
    assert!(out.failed().contains("missing_tbl"), "{}", out.stderr);
    let out = node.cli(&["query", "DELETE FROM t"]);
    assert!(out.failed().contains("read-only"), "{}", out.stderr);
    let out = node.cli(&[
        "query",
        "--timeout",
        "1",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000000) SELECT count(*) FROM c",
    ]);
    let err = out.failed().to_lowercase();
    assert!(err.contains("time"), "timeout reported: {err}");
}

#[test]
fn cli_reports_unreachable_node() {
    let dir = NodeDir::with_schema("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY);");
    // Nothing listens on port 1 of 127.0.0.1 in a test environment.
    let out = dir.cli(&["--api-addr", "127.0.0.1:1", "query", "SELECT 1"]);
    assert!(out.failed().contains("127.0.0.1:1"), "{}", out.stderr);
    let out = dir.cli(&["reload"]);
    let err = out.failed();
    assert!(
        err.contains("admin"),
        "reload without a node names the admin socket: {err}"
    );
}

#[test]
fn bookkeeping_membership_and_log_commands() {
    let dir = NodeDir::with_schema("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT);");
    let node = dir.start();
    let me = node.actor_id.clone();
    node.cli(&["exec", "INSERT INTO t VALUES (1, 'one')"]).ok();
    node.cli(&["exec", "UPDATE t SET a = 'uno' WHERE id = 1"])
        .ok();
    let json = |out: &str| -> serde_json::Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };

    let state = json(node.cli(&["sync", "generate"]).ok());
    assert_eq!(state["actor_id"], me.as_str(), "{state}");
    assert_eq!(state["heads"][&me], 2, "{state}");
    assert_eq!(state["need"], serde_json::json!({}), "{state}");

    // Version 1's only change was overwritten by version 2.
    let v = |n: &str| json(node.cli(&["actor", "version", &me, n]).ok());
    assert_eq!(v("1"), "cleared");
    assert_eq!(v("2")["current"]["db_version"], 2);
    assert!(v("9").is_null());
    let out = node.cli(&["actor", "version", "not-an-actor", "1"]);
    assert!(out.failed().contains("actor_id"), "{}", out.stderr);

    let ok = json(node.cli(&["sync", "check-bookie-consistency"]).ok());
    assert_eq!(ok["consistent"], true);
    let r = json(node.cli(&["sync", "reconcile-gaps"]).ok());
    assert_eq!(
        (r["gaps_before"].as_u64(), r["gaps_after"].as_u64()),
        (Some(0), Some(0))
    );

    let states = json(node.cli(&["cluster", "membership-states"]).ok());
    assert_eq!(states["identity"]["actor_id"], me.as_str(), "{states}");
    let bump = states["identity"]["bump"].as_u64().expect("a bump");
    let rejoined = json(node.cli(&["cluster", "rejoin"]).ok());
    assert_eq!(rejoined["rejoined"]["actor_id"], me.as_str(), "{rejoined}");
    assert!(
        rejoined["rejoined"]["bump"].as_u64() > Some(bump),
        "{rejoined}"
    );

    assert_eq!(
        json(node.cli(&["log", "set", "debug,hyper=info"]).ok())["filter"],
        "debug,hyper=info"
    );
    let out = node.cli(&["log", "set", "verdigris=notalevel"]);
    assert!(
        out.failed().contains("invalid log filter"),
        "{}",
        out.stderr
    );
    node.cli(&["log", "reset"]).ok();
    // The node still serves after all of it.
    assert_eq!(node.cli(&["query", "SELECT a FROM t"]).ok(), "uno\n");
}
