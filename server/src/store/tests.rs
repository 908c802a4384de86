//! Store tests on real (in-memory) SQLite: local capture, no-op filtering, schema evolution,
//! the changes feed, and convergence of several stores exchanging versions in random orders.

use super::*;
use crate::crdt::pack;
use proptest::prelude::*;
use rusqlite::types::Value;

const SCHEMA: &str = "
CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT, score INTEGER DEFAULT 0);
CREATE TABLE tags (k TEXT NOT NULL, v TEXT NOT NULL, PRIMARY KEY (k, v));
";

fn store() -> Store {
    let mut s = Store::open_in_memory().unwrap();
    s.apply_schema(SCHEMA).unwrap();
    s
}

pub(super) fn tx(s: &mut Store, sql: &[&str]) -> Option<u64> {
    let stmts: Vec<Statement> = sql.iter().map(|q| Statement::new(*q)).collect();
    s.transact(&stmts, None).unwrap().version
}

fn all_changes(s: &Store) -> Vec<Change> {
    s.changes(s.actor_id(), 1..=u64::MAX >> 1)
        .unwrap()
        .into_iter()
        .flat_map(|v| v.changes)
        .collect()
}

#[test]
fn insert_produces_one_change_per_column_and_a_version() {
    let mut s = store();
    assert_eq!(
        tx(&mut s, &["INSERT INTO users VALUES (1, 'a', 5)"]),
        Some(1)
    );
    let v = s.changes(s.actor_id(), 1..=1).unwrap();
    assert_eq!(v.len(), 1);
    let cids: Vec<&str> = v[0].changes.iter().map(|c| &*c.cid).collect();
    assert_eq!(cids, vec!["name", "score"]);
    assert_eq!(v[0].changes[0].val, Value::Text("a".into()));
    assert_eq!(
        &*v[0].changes[0].pk,
        &pack::pack_owned(&[Value::Integer(1)])[..]
    );
    assert_eq!(v[0].last_seq, 1);
}

#[test]
fn no_op_writes_create_no_version() {
    let mut s = store();
    tx(&mut s, &["INSERT INTO users VALUES (1, 'a', 5)"]);
    assert_eq!(
        tx(&mut s, &["UPDATE users SET name = 'a' WHERE id = 1"]),
        None
    );
    assert_eq!(
        tx(&mut s, &["INSERT OR REPLACE INTO users VALUES (1, 'a', 5)"]),
        None
    );
    assert_eq!(tx(&mut s, &["INSERT INTO users VALUES (1, 'a', 5) ON CONFLICT (id) DO UPDATE SET name = excluded.name"]), None);
    assert_eq!(
        tx(
            &mut s,
            &[
                "DELETE FROM users WHERE id = 1",
                "INSERT INTO users VALUES (1, 'a', 5)"
            ]
        ),
        None
    );
    assert_eq!(
        tx(
            &mut s,
            &[
                "INSERT INTO users VALUES (2, 'b', 0)",
                "DELETE FROM users WHERE id = 2"
            ]
        ),
        None
    );
    // INTEGER affinity stores 5.0 as 5: still a no-op. A real change gets a version.
    assert_eq!(
        tx(&mut s, &["UPDATE users SET score = 5.0 WHERE id = 1"]),
        None
    );
    assert_eq!(
        tx(&mut s, &["UPDATE users SET name = 'b' WHERE id = 1"]),
        Some(2)
    );
    assert_eq!(s.version_count().unwrap(), 2);
}

#[test]
fn update_only_versions_changed_columns() {
    let mut s = store();
    tx(&mut s, &["INSERT INTO users VALUES (1, 'a', 5)"]);
    tx(&mut s, &["INSERT OR REPLACE INTO users VALUES (1, 'b', 5)"]);
    let v2 = s.changes(s.actor_id(), 2..=2).unwrap();
    assert_eq!(v2[0].changes.len(), 1);
    assert_eq!(&*v2[0].changes[0].cid, "name");
    assert_eq!(v2[0].changes[0].col_version, 2);
    // Version 1 keeps only the score change.
    let v1 = s.changes(s.actor_id(), 1..=1).unwrap();
    assert_eq!(
        v1[0].changes.iter().map(|c| &*c.cid).collect::<Vec<_>>(),
        vec!["score"]
    );
}

#[test]
fn delete_and_reinsert_bump_causal_length() {
    let mut s = store();
    tx(&mut s, &["INSERT INTO users VALUES (1, 'a', 5)"]);
    tx(&mut s, &["DELETE FROM users WHERE id = 1"]);
    let v2 = s.changes(s.actor_id(), 2..=2).unwrap();
    assert_eq!(v2[0].changes.len(), 1);
    assert_eq!(
        (v2[0].changes[0].cid.as_ref(), v2[0].changes[0].cl),
        ("-1", 2)
    );
    // Version 1 is now cleared.
    assert!(s.changes(s.actor_id(), 1..=1).unwrap()[0]
        .changes
        .is_empty());
    tx(&mut s, &["INSERT INTO users VALUES (1, 'c', 1)"]);
    let v3 = s.changes(s.actor_id(), 3..=3).unwrap();
    assert!(v3[0].changes.iter().all(|c| c.cl == 3));
    assert!(s.changes(s.actor_id(), 2..=2).unwrap()[0]
        .changes
        .is_empty());
}

#[test]
fn key_changing_update_is_delete_plus_insert() {
    let mut s = store();
    tx(&mut s, &["INSERT INTO users VALUES (1, 'a', 5)"]);
    tx(&mut s, &["UPDATE users SET id = 2 WHERE id = 1"]);
    let ch = &s.changes(s.actor_id(), 2..=2).unwrap()[0].changes;
    assert_eq!(ch.len(), 3, "{ch:?}");
    assert_eq!(&*ch[0].cid, "-1");
    assert_eq!(ch[0].cl, 2);
}

/// Commits as the store's listeners see them.
fn listen(s: &mut Store) -> std::sync::Arc<std::sync::Mutex<Vec<Committed>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    s.on_commit(Box::new(move |c| out.lock().unwrap().push(c.clone())));
    seen
}

/// Before-images reach commit listeners: always for local writes while wanted, and for remote
/// merges of the wanted tables only; commits are numbered in order.
#[test]
fn before_images_come_with_local_and_merged_commits() {
    let mut a = store();
    let mut b = store();
    let seen = listen(&mut b);
    {
        let shared = b.shared();
        shared.image_tables.write().unwrap().insert("users".into());
        shared
            .images_wanted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    tx(&mut b, &["INSERT INTO users VALUES (1, 'a', 5)"]);
    tx(&mut a, &["INSERT INTO users VALUES (1, 'a', 5)"]);
    tx(
        &mut a,
        &[
            "INSERT INTO users VALUES (2, 'x', 1)",
            "INSERT INTO tags VALUES ('k', 'v')",
        ],
    );
    tx(&mut a, &["UPDATE users SET score = 9 WHERE id = 1"]);
    b.apply_changesets(&to_sets(&a)).unwrap();
    tx(&mut b, &["DELETE FROM users WHERE id = 2"]);
    let seen = seen.lock().unwrap();
    let seqs: Vec<u64> = seen.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Local insert: the row did not exist.
    assert_eq!(seen[0].before.as_deref(), Some(&vec![None]));
    // The merge: users 1 existed (identical insert, then the update; the base row was
    // written once, its value before is the local one), users 2 did not; tags are not wanted.
    let merged = &seen[1];
    let pk = |k: i64| pack::pack(std::iter::once(rusqlite::types::ValueRef::Integer(k)));
    let image = |t: &str, k: &[u8]| {
        merged
            .changed
            .iter()
            .position(|(tt, kk)| &**tt == t && kk.as_slice() == k)
            .map(|i| merged.before.as_ref().expect("recorded")[i].clone())
    };
    assert_eq!(
        image("users", &pk(1)),
        Some(Some(vec![
            Value::Integer(1),
            Value::Text("a".into()),
            Value::Integer(5)
        ]))
    );
    assert_eq!(image("users", &pk(2)), Some(None));
    let tag_key = pack::pack(
        [
            rusqlite::types::ValueRef::Text(b"k"),
            rusqlite::types::ValueRef::Text(b"v"),
        ]
        .into_iter(),
    );
    assert_eq!(
        image("tags", &tag_key),
        Some(None),
        "not wanted: not recorded"
    );
    // Local delete: the row's values before.
    assert_eq!(
        seen[2].before.as_deref(),
        Some(&vec![Some(vec![
            Value::Integer(2),
            Value::Text("x".into()),
            Value::Integer(1)
        ])])
    );
}

#[test]
fn key_only_tables_replicate_through_the_sentinel() {
    let mut a = store();
    let mut b = store();
    tx(&mut a, &["INSERT INTO tags VALUES ('x', 'y')"]);
    let sets = to_sets(&a);
    b.apply_changesets(&sets).unwrap();
    assert_eq!(a.dump_tables().unwrap(), b.dump_tables().unwrap());
}

#[test]
fn adding_a_nullable_column_writes_no_metadata() {
    let mut s = store();
    for i in 0..50 {
        tx(
            &mut s,
            &[&format!("INSERT INTO users VALUES ({i}, 'n{i}', {i})")],
        );
    }
    let before = all_changes(&s).len();
    let r = s
        .apply_schema(&format!("{SCHEMA}; CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT, score INTEGER DEFAULT 0, email TEXT DEFAULT 'none');"))
        .unwrap_err();
    assert!(r.to_string().contains("defined twice"), "{r}");
    let r = s
        .apply_schema("CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT, score INTEGER DEFAULT 0, email TEXT DEFAULT 'none', note TEXT);")
        .unwrap();
    assert_eq!(r.added_columns, vec!["users.email", "users.note"]);
    assert_eq!(all_changes(&s).len(), before);
    assert_eq!(s.version_count().unwrap(), 50);
    let email: String = s
        .conn()
        .query_row("SELECT email FROM users WHERE id = 3", [], |r| r.get(0))
        .unwrap();
    assert_eq!(email, "none");
    // The new column replicates once written.
    assert_eq!(
        tx(&mut s, &["UPDATE users SET note = 'hi' WHERE id = 3"]),
        Some(51)
    );
}

#[test]
fn destructive_schema_changes_are_refused_with_the_column_named() {
    let mut s = store();
    let e = s
        .apply_schema("CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT);")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("users") && e.contains("score") && e.contains("removed"),
        "{e}"
    );
    let e = s
        .apply_schema("CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name INTEGER, score INTEGER DEFAULT 0);")
        .unwrap_err()
        .to_string();
    assert!(e.contains("column name changed"), "{e}");
    for (bad, needle) in [
        ("CREATE TABLE t (a TEXT, b TEXT)", "PRIMARY KEY is required"),
        ("CREATE TABLE t (a TEXT PRIMARY KEY)", "must be NOT NULL"),
        (
            "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL)",
            "DEFAULT",
        ),
        (
            "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT UNIQUE)",
            "UNIQUE",
        ),
        (
            "CREATE TABLE t (a INTEGER PRIMARY KEY, b INTEGER REFERENCES users(id))",
            "FOREIGN KEY",
        ),
        (
            "CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT)",
            "AUTOINCREMENT",
        ),
        ("CREATE UNIQUE INDEX i ON users (name)", "UNIQUE"),
        ("DROP TABLE users", "unsupported statement"),
        ("CREATE TABLE __vd_x (a INTEGER PRIMARY KEY)", "reserved"),
    ] {
        let e = s.apply_schema(bad).unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}

#[test]
fn indexes_are_created_and_dropped_from_the_files() {
    let mut s = store();
    let r = s
        .apply_schema(&format!(
            "{SCHEMA}; CREATE INDEX users_name ON users (name);"
        ))
        .unwrap();
    assert_eq!(r.created_indexes, vec!["users_name"]);
    let r = s.apply_schema(SCHEMA).unwrap();
    assert_eq!(r.dropped_indexes, vec!["users_name"]);
    assert!(s.apply_schema(SCHEMA).unwrap().is_empty());
}

#[test]
fn clients_cannot_alter_replicated_or_internal_tables() {
    let mut s = store();
    for sql in [
        "DROP TABLE users",
        "ALTER TABLE users ADD COLUMN x TEXT",
        "DELETE FROM __vd_versions",
        "CREATE INDEX i ON users (name)",
    ] {
        match s.transact(&[Statement::new(sql)], None) {
            Err(local::TxError::Client { message, .. }) => assert!(
                message.contains("users") || message.contains("__vd_"),
                "{sql}: {message}"
            ),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // Non-replicated tables are fine, and produce no version.
    assert_eq!(
        tx(
            &mut s,
            &["CREATE TABLE scratch (a)", "INSERT INTO scratch VALUES (1)"]
        ),
        None
    );
}

#[test]
fn failed_transactions_roll_back_everything() {
    let mut s = store();
    let r = s.transact(
        &[
            Statement::new("INSERT INTO users VALUES (1, 'a', 1)"),
            Statement::new("INSERT INTO nope VALUES (1)"),
        ],
        None,
    );
    assert!(
        matches!(r, Err(local::TxError::Client { index: 1, .. })),
        "{r:?}"
    );
    assert_eq!(s.version_count().unwrap(), 0);
    assert_eq!(
        tx(&mut s, &["INSERT INTO users VALUES (1, 'a', 1)"]),
        Some(1)
    );
}

fn to_sets(s: &Store) -> Vec<ChangeSet> {
    sets_of(s, s.actor_id())
}

/// Every version of `actor` that `s` holds, as change sets another store can apply.
pub(super) fn sets_of(s: &Store, actor: ActorId) -> Vec<ChangeSet> {
    s.changes(actor, 1..=u64::MAX >> 1)
        .unwrap()
        .into_iter()
        .map(|v| ChangeSet {
            actor: v.actor,
            version: v.version,
            last_seq: v.last_seq,
            ts: v.ts,
            changes: v.changes,
        })
        .collect()
}

/// A random local operation on node-chosen rows (few keys, so nodes conflict a lot).
#[derive(Debug, Clone)]
enum Op {
    Upsert(i64, Option<String>, i64),
    Update(i64, i64),
    Delete(i64),
    MoveKey(i64, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i64..4, proptest::option::of("[ab]"), 0i64..3).prop_map(|(k, n, s)| Op::Upsert(k, n, s)),
        (0i64..4, 0i64..3).prop_map(|(k, s)| Op::Update(k, s)),
        (0i64..4).prop_map(Op::Delete),
        (0i64..4, 0i64..4).prop_map(|(a, b)| Op::MoveKey(a, b)),
    ]
}

/// Runs `ops` as one transaction (versions of several rows, some touched twice).
fn run(s: &mut Store, ops: &[Op]) {
    let stmts: Vec<Statement> = ops.iter().map(statement).collect();
    s.transact(&stmts, None).unwrap();
}

fn statement(op: &Op) -> Statement {
    match op {
        Op::Upsert(k, n, sc) => Statement::with_params(
            "INSERT OR REPLACE INTO users VALUES (?1, ?2, ?3)",
            vec![
                Value::Integer(*k),
                n.clone().map(Value::Text).unwrap_or(Value::Null),
                Value::Integer(*sc),
            ],
        ),
        Op::Update(k, sc) => Statement::with_params(
            "UPDATE users SET score = ?2 WHERE id = ?1",
            vec![Value::Integer(*k), Value::Integer(*sc)],
        ),
        Op::Delete(k) => {
            Statement::with_params("DELETE FROM users WHERE id = ?1", vec![Value::Integer(*k)])
        }
        Op::MoveKey(a, b) => Statement::with_params(
            "UPDATE OR REPLACE users SET id = ?2 WHERE id = ?1",
            vec![Value::Integer(*a), Value::Integer(*b)],
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Three nodes write concurrently; then every node receives every other node's versions in
    /// its own random order, with duplicates. All tables end identical.
    #[test]
    fn stores_converge_under_any_delivery_order(
        ops in proptest::collection::vec((0usize..3, proptest::collection::vec(op(), 1..5)), 1..25),
        shuffles in proptest::collection::vec(any::<prop::sample::Index>(), 3 * 40),
    ) {
        let mut nodes: Vec<Store> = (0..3).map(|_| store()).collect();
        // Interleave: ops run locally; occasionally a node pulls what another has so far.
        for (i, (n, o)) in ops.iter().enumerate() {
            run(&mut nodes[*n], o);
            if i % 5 == 4 {
                let from = (n + 1) % 3;
                let sets = to_sets(&nodes[from]);
                nodes[*n].apply_changesets(&sets).unwrap();
            }
        }
        // Snapshot what each node originated (state-based: read the feed after all local writes).
        let mut all: Vec<ChangeSet> = Vec::new();
        for n in &nodes {
            all.extend(to_sets(n));
        }
        prop_assume!(!all.is_empty());
        for (k, n) in nodes.iter_mut().enumerate() {
            let picks = &shuffles[k * 40..(k + 1) * 40];
            let mut order: Vec<ChangeSet> = picks.iter().map(|p| all[p.index(all.len())].clone()).collect();
            order.extend(all.iter().rev().cloned());
            for chunk in order.chunks(3) {
                n.apply_changesets(chunk).unwrap();
            }
        }
        let d0 = nodes[0].dump_tables().unwrap();
        for n in &nodes[1..] {
            prop_assert_eq!(&d0, &n.dump_tables().unwrap());
        }
    }
}

/// Guard against a vacuous convergence test: concurrent writes to one row on two nodes do
/// conflict, and both nodes pick the same winner.
#[test]
fn concurrent_conflicting_writes_pick_one_winner() {
    let mut a = store();
    let mut b = store();
    tx(&mut a, &["INSERT INTO users VALUES (1, 'from-a', 1)"]);
    tx(&mut b, &["INSERT INTO users VALUES (1, 'from-b', 2)"]);
    tx(
        &mut b,
        &[
            "DELETE FROM users WHERE id = 1",
            "INSERT INTO users VALUES (1, 'b-again', 3)",
        ],
    );
    let (sa, sb) = (to_sets(&a), to_sets(&b));
    let ra = a.apply_changesets(&sb).unwrap();
    b.apply_changesets(&sa).unwrap();
    assert!(!ra.impacted.is_empty());
    let da = a.dump_tables().unwrap();
    assert_eq!(da, b.dump_tables().unwrap());
    // b's delete + re-insert (cl 3) beats a's first life.
    assert_eq!(da[0].1[0][1], Value::Text("b-again".into()));
}

/// Big transactions take the batched clock-insert path; re-inserted rows in the same batch
/// must still start a new life.
#[test]
fn batched_inserts_handle_reinserted_rows() {
    let mut s = store();
    let gen = |n: i64| {
        format!("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) INSERT INTO users SELECT i, 'x' || i, i FROM n", n - 1)
    };
    assert_eq!(tx(&mut s, &[&gen(200)]), Some(1));
    assert_eq!(
        s.changes(s.actor_id(), 1..=1).unwrap()[0].changes.len(),
        400
    );
    tx(&mut s, &["DELETE FROM users WHERE id % 2 = 0"]);
    tx(&mut s, &["DELETE FROM users", &gen(300)]);
    let v3 = &s.changes(s.actor_id(), 3..=3).unwrap()[0].changes;
    // 100 rows were re-inserted from a tombstone (cl 2 → 3); 100 replaced in place (odd rows,
    // same values, no change except... they were deleted and re-inserted with the same
    // values: a no-op); 100 are new (cl 1).
    let cl3 = v3.iter().filter(|c| c.cl == 3).count();
    let cl1 = v3.iter().filter(|c| c.cl == 1).count();
    assert_eq!((cl3, cl1), (200, 200), "{} changes", v3.len());
    let mut other = store();
    other.apply_changesets(&to_sets(&s)).unwrap();
    assert_eq!(other.dump_tables().unwrap(), s.dump_tables().unwrap());
}

/// Clients cannot end, nest or partially roll back the request's transaction: that would
/// commit rows without their clocks, or leave captured effects for rows that were rolled back.
#[test]
fn transaction_control_statements_are_refused() {
    let mut s = store();
    for stmts in [
        vec!["BEGIN"],
        vec!["INSERT INTO users VALUES (1, 'a', 1)", "COMMIT"],
        vec![
            "SAVEPOINT x",
            "INSERT INTO users VALUES (2, 'b', 1)",
            "ROLLBACK TO x",
        ],
        vec!["ROLLBACK"],
    ] {
        let st: Vec<Statement> = stmts.iter().map(|q| Statement::new(*q)).collect();
        match s.transact(&st, None) {
            Err(local::TxError::Client { message, .. }) => assert!(
                message.contains("transaction control"),
                "{stmts:?}: {message}"
            ),
            other => panic!("{stmts:?}: {other:?}"),
        }
    }
    assert_eq!(s.version_count().unwrap(), 0);
    let n: i64 = s
        .conn()
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    // The store still works normally afterwards.
    assert_eq!(
        tx(&mut s, &["INSERT INTO users VALUES (3, 'c', 1)"]),
        Some(1)
    );
}

#[test]
fn clock_tables_are_keyed_like_their_tables() {
    let mut s = Store::open_in_memory().unwrap();
    s.apply_schema(
        "CREATE TABLE a (id INTEGER NOT NULL PRIMARY KEY, v TEXT);
         CREATE TABLE b (id INTEGER PRIMARY KEY DESC, v TEXT);
         CREATE TABLE c (id INTEGER NOT NULL PRIMARY KEY, v TEXT) WITHOUT ROWID;
         CREATE TABLE d (id TEXT NOT NULL PRIMARY KEY, v TEXT);",
    )
    .unwrap();
    let rowid_clock = |s: &Store, t: &str| -> bool {
        let ddl: String = s
            .conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = ?1",
                [format!("{t}__vd_clock")],
                |r| r.get(0),
            )
            .unwrap();
        !ddl.contains("WITHOUT ROWID")
    };
    // Only a real rowid alias gets an integer-keyed clock table: `INTEGER PRIMARY KEY DESC`
    // is not an alias and may hold non-integer keys, like the WITHOUT ROWID and TEXT keys.
    assert!(rowid_clock(&s, "a"));
    assert!(!rowid_clock(&s, "b"));
    assert!(!rowid_clock(&s, "c"));
    assert!(!rowid_clock(&s, "d"));
    for t in ["a", "b", "c", "d"] {
        // Insert, delete and re-insert (a clock that exists takes the slow path), plus a
        // non-integer key where the column allows one.
        let key = if t == "a" { "2" } else { "'x'" };
        let q = format!("INSERT INTO {t} VALUES (1, 'one'), ({key}, 'two')");
        assert!(tx(&mut s, &[&q]).is_some(), "table {t}");
        assert!(tx(&mut s, &[&format!("DELETE FROM {t} WHERE id = 1")]).is_some());
        assert!(tx(&mut s, &[&format!("INSERT INTO {t} VALUES (1, 'again')")]).is_some());
        let rows: i64 = s
            .conn
            .query_row(&format!("SELECT count(*) FROM {t}__vd_clock"), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 2, "table {t}: one clock per key");
        let live: Vec<Value> = all_changes(&s)
            .into_iter()
            .filter(|c| &*c.table == t && &*c.cid == "v")
            .map(|c| c.val)
            .collect();
        assert!(
            live.contains(&Value::Text("again".into())),
            "table {t}: {live:?}"
        );
        let again = all_changes(&s)
            .into_iter()
            .find(|c| &*c.table == t && c.val == Value::Text("again".into()))
            .unwrap();
        assert_eq!(again.cl, 3, "table {t}: the re-insert starts a third life");
    }
}

#[test]
fn older_files_are_marked_newer_files_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let version = |p: &std::path::Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row(
                "SELECT value FROM __vd_state WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let set = |p: &std::path::Path, v: i64| {
        rusqlite::Connection::open(p)
            .unwrap()
            .execute(
                "UPDATE __vd_state SET value = ?1 WHERE key = 'schema_version'",
                [v],
            )
            .unwrap();
    };
    drop(Store::open(&path).unwrap());
    set(&path, 1);
    drop(Store::open(&path).unwrap());
    assert_eq!(version(&path), INTERNAL_SCHEMA_VERSION);
    set(&path, INTERNAL_SCHEMA_VERSION + 1);
    let err = Store::open(&path).err().expect("a newer file is refused");
    assert!(format!("{err:#}").contains("newer Verdigris"), "{err:#}");
}

#[test]
fn literal_inserts_skip_the_text_check_only_where_nothing_can_compute_text() {
    let mut s = Store::open_in_memory().unwrap();
    // A table created by a client with a trigger, then adopted by the schema: its inserts can
    // run the trigger, which computes text, so they keep the check.
    tx(
        &mut s,
        &[
            "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT)",
            "CREATE TRIGGER t_more AFTER INSERT ON t WHEN new.id < 10 BEGIN INSERT INTO t VALUES (new.id + 100, CAST(x'ff' AS TEXT)); END",
        ],
    );
    s.apply_schema(
        "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT);
         CREATE TABLE u (id INTEGER NOT NULL PRIMARY KEY, v TEXT);",
    )
    .unwrap();
    let run = |s: &mut Store, sql: &str, params: Vec<Value>| {
        s.transact(&[Statement::with_params(sql, params)], None)
    };
    let err = run(
        &mut s,
        "INSERT INTO t VALUES (?1, ?2)",
        vec![Value::Integer(1), Value::Text("ok".into())],
    )
    .expect_err("the trigger's text is checked");
    assert!(err.to_string().contains("UTF-8"), "{err}");
    // A plain literal insert into a table without triggers: stored, versioned, replicated.
    let out = run(
        &mut s,
        "INSERT INTO u (id, v) VALUES (?1, ?2), (2, 'two')",
        vec![Value::Integer(1), Value::Text("one".into())],
    )
    .unwrap();
    assert!(out.version.is_some());
    let vals: Vec<Value> = all_changes(&s)
        .into_iter()
        .filter(|c| &*c.table == "u")
        .map(|c| c.val)
        .collect();
    assert_eq!(
        vals,
        vec![Value::Text("one".into()), Value::Text("two".into())]
    );
    // A default that is an expression could compute text: that table keeps the check.
    s.apply_schema(
        "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT);
         CREATE TABLE u (id INTEGER NOT NULL PRIMARY KEY, v TEXT);
         CREATE TABLE w (id INTEGER NOT NULL PRIMARY KEY, v TEXT DEFAULT (CAST(x'ff' AS TEXT)), n INTEGER DEFAULT -1, s TEXT DEFAULT 'x');",
    )
    .unwrap();
    let err =
        run(&mut s, "INSERT INTO w (id) VALUES (1)", vec![]).expect_err("the default is checked");
    assert!(err.to_string().contains("UTF-8"), "{err}");
    let catalog = s.shared().catalog();
    assert!(!catalog.get("w").unwrap().literal_inserts_are_utf8);
    assert!(catalog.get("u").unwrap().literal_inserts_are_utf8);
    assert!(!catalog.get("t").unwrap().literal_inserts_are_utf8);
    // Computed text in the same table is still checked.
    let err = run(
        &mut s,
        "INSERT INTO u VALUES (3, CAST(x'ff' AS TEXT))",
        vec![],
    )
    .expect_err("computed text is checked");
    assert!(err.to_string().contains("UTF-8"), "{err}");
}
