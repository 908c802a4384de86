//! Differential test of the engine: random writes (inserts, updates, deletes, key-moving
//! updates) on three related tables; after every batch, the state a client rebuilds from the
//! emitted changes must equal a fresh run of the query (as a multiset).

use proptest::prelude::*;
use rusqlite::types::Value;
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};
use verdigris_subscriptions::matview::Changes;
use verdigris_subscriptions::stmt::Statement;
use verdigris_subscriptions::{analyze, ChangeKind, MatView, Plan, Schema};

const SCHEMA: &str = "
CREATE TABLE a (id INTEGER NOT NULL PRIMARY KEY, x INTEGER, y TEXT);
CREATE TABLE b (id INTEGER NOT NULL PRIMARY KEY, a_id INTEGER, z INTEGER);
CREATE TABLE c (k1 INTEGER NOT NULL, k2 TEXT NOT NULL, b_id INTEGER, w TEXT, PRIMARY KEY (k1, k2));
";

struct TestSchema;
impl Schema for TestSchema {
    fn primary_key(&self, table: &str) -> Option<Vec<String>> {
        match table.to_ascii_lowercase().as_str() {
            "a" | "b" => Some(vec!["id".into()]),
            "c" => Some(vec!["k1".into(), "k2".into()]),
            _ => None,
        }
    }
    fn columns(&self, table: &str) -> Option<Vec<String>> {
        let cols: &[&str] = match table.to_ascii_lowercase().as_str() {
            "a" => &["id", "x", "y", "pad", "n"],
            "b" => &["id", "a_id", "z", "pad", "n"],
            "c" => &["k1", "k2", "b_id", "w"],
            _ => return None,
        };
        Some(cols.iter().map(|c| c.to_string()).collect())
    }
}

/// (query, expected plan is keyed)
const QUERIES: &[(&str, bool)] = &[
    ("SELECT * FROM a", true),
    ("select id, x from A where x > 1", true),
    ("SELECT a.id, b.id AS bid, b.z FROM a JOIN b ON b.a_id = a.id", true),
    ("SELECT a.id, b.z FROM a LEFT JOIN b ON b.a_id = a.id", true),
    ("SELECT a.id, b.id, c.w FROM a LEFT JOIN b ON b.a_id = a.id LEFT JOIN c ON c.b_id = b.id WHERE a.x IS NOT NULL", true),
    ("SELECT a.id, b.id FROM a LEFT JOIN b ON b.a_id = a.id AND b.z > 1", true),
    ("SELECT a.id, b.z FROM a LEFT JOIN b ON b.a_id = a.id WHERE a.x = 0 AND (b.z IS NULL OR b.z > 0)", false),
    ("SELECT a.id FROM a LEFT JOIN b ON b.a_id = a.id WHERE z IS NULL", false),
    ("SELECT a.id, b.z FROM a LEFT JOIN b ON b.a_id = a.id WHERE x > 0", true),
    ("SELECT p.id, q.id FROM a p JOIN a q ON q.x = p.x AND q.id <> p.id", true),
    ("SELECT b.id, c.k2 FROM b JOIN c ON c.b_id = b.id ORDER BY c.k2", true),
    ("SELECT a.id FROM a WHERE a.id IN (SELECT a_id FROM b WHERE z > 1)", false),
    // IN (SELECT pk …) becomes a join (unqualified names on both sides, `*`, extra filters).
    ("SELECT id, z FROM b WHERE a_id IN (SELECT id FROM a WHERE x > 0)", true),
    ("SELECT * FROM b WHERE z >= 1 AND a_id IN (SELECT a.id FROM a WHERE a.y = 'p')", true),
    ("SELECT b.id FROM b WHERE b.a_id IN (SELECT id FROM a) AND b.a_id IN (SELECT id FROM a WHERE y IS NOT NULL) ORDER BY z", true),
    ("SELECT k1, k2, w FROM c WHERE b_id IN (SELECT q.id FROM b AS q WHERE q.z = 2 OR q.a_id IS NULL)", true),
    ("SELECT id FROM b WHERE a_id + 1 IN (SELECT id FROM a WHERE x IS NULL)", true),
    // EXISTS over the key, correlated by `pk = outer column`, becomes a join too.
    ("SELECT id, z FROM b WHERE EXISTS (SELECT 1 FROM a WHERE a.id = b.a_id AND x > 0)", true),
    ("SELECT * FROM b WHERE z >= 1 AND EXISTS (SELECT * FROM a WHERE b.a_id = id AND y = 'p')", true),
    ("SELECT k1, k2, w FROM c WHERE EXISTS (SELECT id FROM b AS q WHERE q.id = b_id AND (q.z = 2 OR q.a_id IS NULL))", true),
    ("SELECT id FROM b WHERE EXISTS (SELECT count(*) FROM a WHERE a.id = b.a_id)", false),
    ("SELECT id FROM b WHERE NOT EXISTS (SELECT 1 FROM a WHERE a.id = b.a_id)", false),
    ("SELECT id FROM b WHERE EXISTS (SELECT 1 FROM a WHERE a.x = b.a_id)", false),
    ("SELECT id FROM b WHERE EXISTS (SELECT 1 FROM a WHERE a.id = b.a_id AND a.x = b.z)", false),
    // Correlated, NOT IN, or not the key: re-run.
    ("SELECT id FROM b WHERE a_id IN (SELECT id FROM a WHERE a.x = b.z)", false),
    ("SELECT id FROM b WHERE a_id NOT IN (SELECT id FROM a WHERE x > 0)", false),
    ("SELECT id FROM b WHERE a_id IN (SELECT x FROM a)", false),
    ("SELECT id FROM b WHERE z = 1 OR a_id IN (SELECT id FROM a)", false),
    ("SELECT * FROM a WHERE EXISTS (SELECT 1 FROM c WHERE c.w = a.y)", false),
    ("SELECT b.id, (SELECT y FROM a WHERE a.id = b.a_id) FROM b", false),
    ("SELECT DISTINCT x FROM a", false),
    ("SELECT x, count(*) FROM a GROUP BY x", false),
    ("SELECT count(*), sum(z) FROM b", false),
    // A quoted function name is the same function.
    ("SELECT \"count\"(*), \"SUM\"(z) FROM b", false),
    ("SELECT * FROM a ORDER BY x DESC, id LIMIT 3", false),
    ("SELECT id, x FROM a ORDER BY x LIMIT 2", false),
    ("SELECT id, y FROM a WHERE x IS NOT NULL ORDER BY y DESC NULLS FIRST, id LIMIT 2 OFFSET 1", false),
    ("SELECT k1, k2, w FROM c ORDER BY w, k2 DESC LIMIT 3", false),
    ("SELECT z, a_id FROM b ORDER BY z * 2 DESC LIMIT 1, 2", false),
    ("SELECT id FROM a UNION SELECT a_id FROM b", false),
    ("WITH big AS (SELECT * FROM b WHERE z > 0) SELECT a.id, big.z FROM a JOIN big ON big.a_id = a.id", false),
    ("SELECT a.id, max(b.z) FROM a LEFT JOIN b ON b.a_id = a.id GROUP BY a.id", false),
    ("SELECT count(*) FROM a WHERE id > (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT count(*) - 3 FROM c)", false),
];

#[derive(Debug, Clone)]
enum Op {
    UpsertA(i64, Option<i64>, Option<String>),
    UpsertB(i64, Option<i64>, i64),
    UpsertC(i64, String, Option<i64>, Option<String>),
    DeleteA(i64),
    DeleteB(i64),
    DeleteC(i64, String),
    MoveA(i64, i64),
    MoveB(i64, i64),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0i64..5;
    let s = prop_oneof![Just("p".to_string()), Just("q".to_string())];
    prop_oneof![
        (
            k.clone(),
            proptest::option::of(0i64..3),
            proptest::option::of(prop_oneof![Just("p".to_string()), Just("q".to_string())])
        )
            .prop_map(|(a, b, c)| Op::UpsertA(a, b, c)),
        (k.clone(), proptest::option::of(0i64..5), 0i64..3)
            .prop_map(|(a, b, c)| Op::UpsertB(a, b, c)),
        (
            0i64..3,
            s.clone(),
            proptest::option::of(0i64..5),
            proptest::option::of(prop_oneof![Just("p".to_string()), Just("q".to_string())])
        )
            .prop_map(|(a, b, c, d)| Op::UpsertC(a, b, c, d)),
        k.clone().prop_map(Op::DeleteA),
        k.clone().prop_map(Op::DeleteB),
        (0i64..3, s).prop_map(|(a, b)| Op::DeleteC(a, b)),
        (k.clone(), k.clone()).prop_map(|(a, b)| Op::MoveA(a, b)),
        (k.clone(), k).prop_map(|(a, b)| Op::MoveB(a, b)),
    ]
}

fn key(vals: &[Value]) -> Vec<u8> {
    verdigris_subscriptions::pack::pack_owned(vals)
}

/// Applies `op`, recording the touched keys like the store's commit notification does.
fn apply(conn: &Connection, op: &Op, changes: &mut Changes) {
    let i = Value::Integer;
    let opt = |v: &Option<i64>| v.map(Value::Integer).unwrap_or(Value::Null);
    let txt = |v: &Option<String>| v.clone().map(Value::Text).unwrap_or(Value::Null);
    let mut touch = |t: &str, k: Vec<Value>| {
        changes.entry(t.to_string()).or_default().insert(key(&k));
    };

    match op {
        Op::UpsertA(k, x, y) => {
            conn.execute(
                "INSERT OR REPLACE INTO a (id, x, y) VALUES (?1, ?2, ?3)",
                rusqlite::params_from_iter([i(*k), opt(x), txt(y)]),
            )
            .unwrap();
            touch("a", vec![i(*k)]);
        }
        Op::UpsertB(k, a, z) => {
            conn.execute(
                "INSERT OR REPLACE INTO b (id, a_id, z) VALUES (?1, ?2, ?3)",
                rusqlite::params_from_iter([i(*k), opt(a), i(*z)]),
            )
            .unwrap();
            touch("b", vec![i(*k)]);
        }
        Op::UpsertC(k1, k2, b, w) => {
            conn.execute(
                "INSERT OR REPLACE INTO c (k1, k2, b_id, w) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params_from_iter([i(*k1), Value::Text(k2.clone()), opt(b), txt(w)]),
            )
            .unwrap();
            touch("c", vec![i(*k1), Value::Text(k2.clone())]);
        }
        Op::DeleteA(k) => {
            conn.execute("DELETE FROM a WHERE id = ?1", [k]).unwrap();
            touch("a", vec![i(*k)]);
        }
        Op::DeleteB(k) => {
            conn.execute("DELETE FROM b WHERE id = ?1", [k]).unwrap();
            touch("b", vec![i(*k)]);
        }
        Op::DeleteC(k1, k2) => {
            conn.execute(
                "DELETE FROM c WHERE k1 = ?1 AND k2 = ?2",
                rusqlite::params![k1, k2],
            )
            .unwrap();
            touch("c", vec![i(*k1), Value::Text(k2.clone())]);
        }
        Op::MoveA(from, to) => {
            conn.execute("UPDATE OR REPLACE a SET id = ?2 WHERE id = ?1", [from, to])
                .unwrap();
            touch("a", vec![i(*from)]);
            touch("a", vec![i(*to)]);
        }
        Op::MoveB(from, to) => {
            conn.execute("UPDATE OR REPLACE b SET id = ?2 WHERE id = ?1", [from, to])
                .unwrap();
            touch("b", vec![i(*from)]);
            touch("b", vec![i(*to)]);
        }
    }
}

fn fresh(conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let mut rows: Vec<Vec<Value>> = stmt
        .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    rows
}

fn sorted(client: &BTreeMap<u64, Vec<Value>>) -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = client.values().cloned().collect();
    rows.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    rows
}

#[test]
fn plans_are_chosen_as_documented() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for (q, keyed) in QUERIES {
        let a = analyze(&conn, &Statement::new(*q), &TestSchema).unwrap();
        assert_eq!(
            matches!(a.plan, Plan::Keyed { .. }),
            *keyed,
            "{q}: {:?}",
            a.plan
        );
    }
    let a = analyze(
        &conn,
        &Statement::new("SELECT a.id FROM a WHERE a.id IN (SELECT a_id FROM b)"),
        &TestSchema,
    )
    .unwrap();
    assert_eq!(a.tables.iter().collect::<Vec<_>>(), vec!["a", "b"]);
    let a = analyze(
        &conn,
        &Statement::new("WITH t AS (SELECT * FROM c) SELECT * FROM t, json_each('[1]')"),
        &TestSchema,
    )
    .unwrap();
    assert_eq!(a.tables.iter().collect::<Vec<_>>(), vec!["c"]);
}

#[test]
fn bad_queries_are_refused_with_clear_errors() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute_batch("CREATE TABLE local_only (id INTEGER PRIMARY KEY)")
        .unwrap();
    for (q, needle) in [
        ("SELECT * FROM nope", "no such table"),
        ("SELECT nope FROM a", "no such column"),
        ("DELETE FROM a", "SELECT"),
        ("SELECT 1; SELECT 2", "exactly one"),
        ("SELECT * FROM local_only", "not a replicated table"),
        ("SELECT 1", "reads no replicated table"),
        ("SELEC 1", "syntax error"),
    ] {
        let e = analyze(&conn, &Statement::new(q), &TestSchema).unwrap_err();
        assert!(e.0.contains(needle), "{q}: {e}");
    }
}

#[test]
fn parameters_are_inlined_and_normalized_sql_dedupes() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let a1 = analyze(
        &conn,
        &Statement::with_params(
            "SELECT * FROM a WHERE x = ? AND y = ?",
            vec![Value::Integer(1), Value::Text("it's".into())],
        ),
        &TestSchema,
    )
    .unwrap();
    let a2 = analyze(
        &conn,
        &Statement::new("select *  from A where X = 1 and Y = 'it''s'"),
        &TestSchema,
    )
    .unwrap();
    assert_eq!(a1.normalized, a2.normalized);
    let a3 = analyze(
        &conn,
        &Statement::new("SELECT * FROM a WHERE x = 2 AND y = 'it''s'"),
        &TestSchema,
    )
    .unwrap();
    assert_ne!(a1.normalized, a3.normalized);
    let named =
        verdigris_subscriptions::stmt::Params::Named(vec![(":v".into(), Value::Blob(vec![1, 2]))]);
    let a4 = analyze(
        &conn,
        &Statement {
            sql: "SELECT * FROM a WHERE y = :v".into(),
            params: named,
        },
        &TestSchema,
    )
    .unwrap();
    assert!(a4.sql.contains("X'0102'"), "{}", a4.sql);
}

/// A random schema with the corpus's table and column names: declared types (and so affinity
/// and comparison rules) vary, tables may be WITHOUT ROWID, and unused columns may be added.
fn random_schema() -> impl Strategy<Value = String> {
    let ty = || {
        prop_oneof![
            Just(""),
            Just("INTEGER"),
            Just("TEXT"),
            Just("REAL"),
            Just("NUMERIC"),
            Just("BLOB")
        ]
    };
    let rowid = || prop_oneof![Just(""), Just(" WITHOUT ROWID")];
    let extra = || prop_oneof![Just(""), Just(", pad TEXT DEFAULT 'p'"), Just(", n REAL")];
    (ty(), ty(), ty(), ty(), ty(), (rowid(), rowid(), rowid()), (extra(), extra()))
        .prop_map(|(x, y, a_id, z, w, (ra, rb, rc), (ea, eb))| {
            format!(
                "CREATE TABLE a (id INTEGER NOT NULL PRIMARY KEY, x {x}, y {y}{ea}){ra};
                 CREATE TABLE b (id INTEGER NOT NULL PRIMARY KEY, a_id {a_id}, z {z}{eb}){rb};
                 CREATE TABLE c (k1 INTEGER NOT NULL, k2 TEXT NOT NULL, b_id INTEGER, w {w}, PRIMARY KEY (k1, k2)){rc};"
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn client_state_always_equals_a_fresh_run(
        schema in random_schema(),
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..12),
    ) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&schema).unwrap();
        let mut subs = Vec::new();
        for (q, _) in QUERIES {
            let a = analyze(&conn, &Statement::new(*q), &TestSchema).unwrap();
            let mut mv = MatView::new(&a);
            let client: BTreeMap<u64, Vec<Value>> = mv.initial(&conn).unwrap().into_iter().collect();
            subs.push((a, mv, client));
        }
        for batch in &batches {
            let mut changes: Changes = HashMap::new();
            for o in batch {
                apply(&conn, o, &mut changes);
            }
            for (a, mv, client) in subs.iter_mut() {
                for ch in mv.refresh(&conn, &a.tables, &changes).unwrap() {
                    match ch.kind {
                        ChangeKind::Insert => prop_assert!(client.insert(ch.row_id, ch.cells).is_none(), "{}: insert of existing row", a.sql),
                        ChangeKind::Update => prop_assert!(client.insert(ch.row_id, ch.cells).is_some(), "{}: update of unknown row", a.sql),
                        ChangeKind::Delete => prop_assert!(client.remove(&ch.row_id).is_some(), "{}: delete of unknown row", a.sql),
                    }
                }
                prop_assert_eq!(sorted(client), fresh(&conn, &a.sql), "query {}", a.sql);
                prop_assert_eq!(mv.len(), client.len());
            }
        }
    }
}

const FAMILIES: &[&str] = &[
    "SELECT * FROM a WHERE x = ?",
    "SELECT a.id, b.z FROM a LEFT JOIN b ON b.a_id = a.id AND b.z > 0 WHERE a.x = ?",
    "SELECT a.id, b.id, c.w FROM a JOIN b ON b.a_id = a.id LEFT JOIN c ON c.b_id = b.id WHERE ? = a.y",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(80))]

    /// Members of a parameter family are refreshed by one shared evaluation; each member's
    /// client state must still equal a fresh run of its own query.
    #[test]
    fn family_members_stay_exact(batches in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..10)) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        for template in FAMILIES {
            let values: Vec<Value> = if template.contains("a.y") {
                vec![Value::Text("p".into()), Value::Text("q".into())]
            } else {
                vec![Value::Integer(0), Value::Integer(1), Value::Integer(2), Value::Null]
            };
            let mut members = Vec::new();
            for (i, v) in values.iter().enumerate() {
                let a = analyze(&conn, &Statement::with_params(*template, vec![v.clone()]), &TestSchema).unwrap();
                let fam = a.family.clone().expect("family detected");
                fam.add_member(&conn, i as u64).unwrap();
                let mut mv = MatView::new(&a);
                let client: BTreeMap<u64, Vec<Value>> = mv.initial(&conn).unwrap().into_iter().collect();
                members.push((a, fam, mv, client));
            }
            let keys: Vec<&str> = members.iter().map(|m| m.1.key.as_str()).collect();
            prop_assert!(keys.windows(2).all(|w| w[0] == w[1]), "members share the family key");
            // The family's members and index live across batches, as on a node.
            let fam = members[0].1.clone();
            let mut views: HashMap<u64, MatView> = HashMap::new();
            let mut index = verdigris_subscriptions::family::FamilyIndex::default();
            for (i, m) in members.iter_mut().enumerate() {
                let mv = std::mem::replace(&mut m.2, MatView::new(&m.0));
                match &mv {
                    MatView::Keyed(k) => index.add_member(i as u64, k),
                    _ => panic!("family members are keyed"),
                }
                views.insert(i as u64, mv);
            }
            for batch in &batches {
                let mut changes: Changes = HashMap::new();
                for o in batch {
                    apply(&conn, o, &mut changes);
                }
                let out = fam.refresh(&conn, &mut views, &mut index, &changes).unwrap();
                for (idx, chs) in out {
                    let client = &mut members[idx as usize].3;
                    for ch in chs {
                        match ch.kind {
                            ChangeKind::Insert => prop_assert!(client.insert(ch.row_id, ch.cells).is_none()),
                            ChangeKind::Update => prop_assert!(client.insert(ch.row_id, ch.cells).is_some()),
                            ChangeKind::Delete => prop_assert!(client.remove(&ch.row_id).is_some()),
                        }
                    }
                }
                for (i, m) in members.iter().enumerate() {
                    prop_assert_eq!(sorted(&m.3), fresh(&conn, &m.0.sql), "member query {}", m.0.sql);
                    prop_assert_eq!(views[&(i as u64)].len(), m.3.len());
                }
            }
            // The index is exactly what the members' rows were built from.
            let mut rebuilt = verdigris_subscriptions::family::FamilyIndex::default();
            for (i, mv) in &views {
                if let MatView::Keyed(k) = mv {
                    rebuilt.add_member(*i, k);
                }
            }
            prop_assert_eq!(rebuilt.len(), index.len(), "incrementally kept index matches a rebuild");
            for t in ["a", "b", "c"] {
                conn.execute(&format!("DELETE FROM {t}"), []).unwrap();
            }
        }
    }
}

/// SQLite syntax that sqlparser reads differently or not at all is re-run verbatim, so results
/// and column names match a plain query, and changes still reach the subscription.
#[test]
fn syntax_outside_the_rewriter_is_run_verbatim() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute_batch("INSERT INTO a VALUES (1, 16, 'b_x'), (2, 17, 'bx'), (3, NULL, 'c')")
        .unwrap();
    let cases: Vec<Statement> = vec![
        Statement::new("SELECT id FROM a WHERE x > 0x10"),
        Statement::new("SELECT 0x10, id FROM a"),
        Statement::new("SELECT id FROM a WHERE x IS 16"),
        Statement::new("SELECT id FROM a WHERE y GLOB 'b*'"),
        Statement::new("SELECT id, x << 1, ~x FROM a"),
        Statement::new("SELECT id, x+1, upper(y)||'!' FROM a"),
        Statement::with_params(
            "SELECT id FROM a WHERE y LIKE ? ESCAPE ?",
            vec![Value::Text("b!_%".into()), Value::Text("!".into())],
        ),
    ];
    for st in cases {
        let a = analyze(&conn, &st, &TestSchema).unwrap_or_else(|e| panic!("{}: {e}", st.sql));
        let mut p = conn.prepare(&st.sql).unwrap();
        verdigris_subscriptions::stmt::bind(&mut p, &st.params).unwrap();
        let names: Vec<String> = p.column_names().iter().map(|c| c.to_string()).collect();
        assert_eq!(a.columns, names, "{}", st.sql);
        let n = p.column_count();
        let mut expected: Vec<Vec<Value>> = Vec::new();
        let mut rows = p.raw_query();
        while let Some(r) = rows.next().unwrap() {
            expected.push((0..n).map(|i| r.get::<_, Value>(i).unwrap()).collect());
        }
        drop(rows);
        let mut mv = MatView::new(&a);
        let mut client: BTreeMap<u64, Vec<Value>> =
            mv.initial(&conn).unwrap().into_iter().collect();
        expected.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        assert_eq!(sorted(&client), expected, "{}", st.sql);
        // A change reaches it.
        conn.execute("UPDATE a SET x = 40, y = 'b_y' WHERE id = 3", [])
            .unwrap();
        let mut changes: Changes = HashMap::new();
        changes
            .entry("a".into())
            .or_default()
            .insert(key(&[Value::Integer(3)]));
        for ch in mv.refresh(&conn, &a.tables, &changes).unwrap() {
            match ch.kind {
                ChangeKind::Delete => {
                    client.remove(&ch.row_id);
                }
                _ => {
                    client.insert(ch.row_id, ch.cells);
                }
            }
        }
        let mut p = conn.prepare(&st.sql).unwrap();
        verdigris_subscriptions::stmt::bind(&mut p, &st.params).unwrap();
        let mut fresh_rows: Vec<Vec<Value>> = Vec::new();
        let mut rows = p.raw_query();
        while let Some(r) = rows.next().unwrap() {
            fresh_rows.push((0..n).map(|i| r.get::<_, Value>(i).unwrap()).collect());
        }
        fresh_rows.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        assert_eq!(sorted(&client), fresh_rows, "{} after a change", st.sql);
        conn.execute("UPDATE a SET x = NULL, y = 'c' WHERE id = 3", [])
            .unwrap();
    }
}
