//! Subscription results must always equal a fresh run of the query. Targeted scenarios
//! (LEFT JOIN NULL-extension, subqueries over another table, single-row aggregates keeping
//! their row id) and a pseudo-random workload over two related tables with many query
//! shapes subscribed at once: after every few transactions each client state rebuilt from
//! the events is compared (as a multiset) with `POST /v1/queries` of the same SQL.

use crate::client::{multiset, Sub};
use crate::support::{NodeDir, Proto};
use crate::{both_protocols, SCHEMA};
use serde_json::{json, Value};

both_protocols!(
    left_join_null_extension,
    subquery_tracks_other_table,
    aggregate_updates_same_row,
    random_workload_all_shapes,
    parameters_everywhere,
    like_escape_parameter,
    column_names_match_queries,
);

fn rows(v: Value) -> Vec<String> {
    let rows: Vec<Vec<Value>> = serde_json::from_value(v).expect("rows");
    multiset(&rows)
}

async fn left_join_null_extension(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO teams VALUES (1, 'red'), (2, 'blue')",
        "INSERT INTO users VALUES (10, 'ann', 1, 5), (11, 'bob', 1, 6)"
    ]))
    .await;
    let q = json!("SELECT t.id, t.title, u.name FROM teams t LEFT JOIN users u ON u.team = t.id");
    let mut s = Sub::post(&node.api(proto).with_nodelay(), &q).await;
    assert_eq!(s.columns, ["id", "title", "name"]);
    assert_eq!(
        s.state(),
        rows(json!([
            [1, "red", "ann"],
            [1, "red", "bob"],
            [2, "blue", null]
        ]))
    );

    w.write(&json!(["DELETE FROM users WHERE id = 10"])).await;
    s.sync(&w, &q).await;
    assert_eq!(
        s.state(),
        rows(json!([[1, "red", "bob"], [2, "blue", null]]))
    );

    // The last match goes away → the NULL-extended row appears.
    w.write(&json!(["DELETE FROM users WHERE id = 11"])).await;
    s.sync(&w, &q).await;
    assert_eq!(
        s.state(),
        rows(json!([[1, "red", null], [2, "blue", null]]))
    );

    // A match appears → the NULL-extended row disappears.
    w.write(&json!(["INSERT INTO users VALUES (12, 'cat', 1, 7)"]))
        .await;
    s.sync(&w, &q).await;
    assert_eq!(
        s.state(),
        rows(json!([[1, "red", "cat"], [2, "blue", null]]))
    );

    // Moving a user between teams flips both sides; renaming a team updates its rows.
    w.write(&json!([
        "UPDATE users SET team = 2 WHERE id = 12",
        "UPDATE teams SET title = 'navy' WHERE id = 2"
    ]))
    .await;
    s.sync(&w, &q).await;
    assert_eq!(
        s.state(),
        rows(json!([[1, "red", null], [2, "navy", "cat"]]))
    );
    w.write(&json!(["DELETE FROM teams WHERE id = 1"])).await;
    s.sync(&w, &q).await;
    assert_eq!(s.state(), rows(json!([[2, "navy", "cat"]])));
}

async fn subquery_tracks_other_table(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO teams VALUES (1, 'red'), (2, 'blue')",
        "INSERT INTO users VALUES (1, 'ann', 1, 5), (2, 'bob', 2, 6)"
    ]))
    .await;
    let q = json!(
        "SELECT id, name FROM users WHERE team IN (SELECT id FROM teams WHERE title LIKE 'r%')"
    );
    let mut s = Sub::post(&node.api(proto).with_nodelay(), &q).await;
    assert_eq!(s.state(), rows(json!([[1, "ann"]])));
    // `team IN (SELECT id …)` over the rowid key is maintained as a join, not re-run.
    let plan = plan_of(&dir, &s.id);
    assert!(plan.starts_with("incremental"), "{plan}");

    // Only the subquery's table changes.
    w.write(&json!(["UPDATE teams SET title = 'rust' WHERE id = 2"]))
        .await;
    let c = s.change().await;
    assert_eq!(
        (c.kind.as_str(), c.cells),
        ("insert", vec![json!(2), json!("bob")])
    );
    w.write(&json!(["DELETE FROM teams WHERE id = 1"])).await;
    let c = s.change().await;
    assert_eq!(
        (c.kind.as_str(), c.cells),
        ("delete", vec![json!(1), json!("ann")])
    );
    s.sync(&w, &q).await;
    assert_eq!(s.state(), rows(json!([[2, "bob"]])));

    // EXISTS over the other table.
    let q2 = json!("SELECT t.title FROM teams t WHERE EXISTS (SELECT 1 FROM users u WHERE u.team = t.id AND u.score > 5)");
    let mut e = Sub::post(&node.api(proto).with_nodelay(), &q2).await;
    assert_eq!(e.state(), rows(json!([["rust"]])));
    w.write(&json!(["UPDATE users SET score = 1 WHERE id = 2"]))
        .await;
    e.sync(&w, &q2).await;
    assert!(e.rows.is_empty(), "{:?}", e.rows);
    s.sync(&w, &q).await;

    // EXISTS correlated by the other table's rowid key: maintained as a join too.
    let q3 = json!("SELECT u.id, u.name FROM users u WHERE EXISTS (SELECT 1 FROM teams t WHERE t.id = u.team AND t.title LIKE 'r%')");
    let mut k = Sub::post(&node.api(proto).with_nodelay(), &q3).await;
    assert_eq!(k.state(), rows(json!([[2, "bob"]])));
    let plan = plan_of(&dir, &k.id);
    assert!(plan.starts_with("incremental"), "{plan}");
    w.write(&json!(["UPDATE teams SET title = 'blue' WHERE id = 2"]))
        .await;
    let c = k.change().await;
    assert_eq!(
        (c.kind.as_str(), c.cells),
        ("delete", vec![json!(2), json!("bob")])
    );
    w.write(&json!(["INSERT INTO teams VALUES (1, 'rose')"]))
        .await;
    let c = k.change().await;
    assert_eq!(
        (c.kind.as_str(), c.cells),
        ("insert", vec![json!(1), json!("ann")])
    );
    k.sync(&w, &q3).await;
    assert_eq!(k.state(), rows(json!([[1, "ann"]])));
}

/// The plan `verdigris subs list` reports for a subscription.
fn plan_of(dir: &NodeDir, id: &str) -> String {
    let out = dir.cli(&["subs", "list"]);
    let list: Vec<Value> = serde_json::from_str(out.ok()).expect("subs list prints JSON");
    let sub = list.iter().find(|v| v["id"] == id).expect("listed");
    sub["plan"].as_str().expect("a plan").to_string()
}

async fn aggregate_updates_same_row(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO users VALUES (1, 'ann', 1, 5), (2, 'bob', 2, 6)"
    ]))
    .await;
    let q = json!("SELECT count(*), sum(score) FROM users");
    let mut s = Sub::post(&node.api(proto).with_nodelay(), &q).await;
    assert_eq!(s.state(), rows(json!([[2, 11]])));
    let rid = *s.rows.keys().next().expect("one row");
    let steps = [
        ("INSERT INTO users VALUES (3, 'cat', 1, 10)", json!([3, 21])),
        ("UPDATE users SET score = 1 WHERE id = 1", json!([3, 17])),
        ("DELETE FROM users WHERE id = 2", json!([2, 11])),
        ("DELETE FROM users", json!([0, null])),
        ("INSERT INTO users VALUES (4, 'dan', 1, 4)", json!([1, 4])),
    ];
    for (i, (sql, want)) in steps.iter().enumerate() {
        w.write(&json!([sql])).await;
        let c = s.change().await;
        assert_eq!(
            (c.kind.as_str(), c.row_id, c.id, Value::Array(c.cells)),
            ("update", rid, i as u64 + 1, want.clone()),
            "after {sql}"
        );
    }
    // An update that leaves the aggregate unchanged produces no event.
    w.write(&json!(["UPDATE users SET name = 'dave' WHERE id = 4"]))
        .await;
    w.write(&json!(["UPDATE users SET score = 5 WHERE id = 4"]))
        .await;
    let c = s.change().await;
    assert_eq!((c.id, Value::Array(c.cells)), (6, json!([1, 5])));

    // GROUP BY: per-group rows come and go.
    let g = json!("SELECT team, count(*) FROM users GROUP BY team");
    let mut gs = Sub::post(&node.api(proto).with_nodelay(), &g).await;
    w.write(&json!([
        "INSERT INTO users VALUES (5, 'eve', 2, 1), (6, 'fay', 2, 1)"
    ]))
    .await;
    gs.sync(&w, &g).await;
    assert_eq!(gs.state(), rows(json!([[1, 1], [2, 2]])));
    w.write(&json!(["DELETE FROM users WHERE team = 1"])).await;
    gs.sync(&w, &g).await;
    assert_eq!(gs.state(), rows(json!([[2, 2]])));
    s.sync(&w, &q).await;
}

/// Query shapes maintained under the random workload.
pub const QUERIES: &[&str] = &[
    "SELECT t.id, t.title, u.name FROM teams t LEFT JOIN users u ON u.team = t.id",
    "SELECT u.id, u.name, t.title FROM users u LEFT JOIN teams t ON t.id = u.team",
    "SELECT u.name, t.title FROM users u JOIN teams t ON t.id = u.team WHERE u.score > 50",
    "SELECT id, name FROM users WHERE team IN (SELECT id FROM teams WHERE title LIKE 'r%')",
    "SELECT t.id FROM teams t WHERE EXISTS (SELECT 1 FROM users u WHERE u.team = t.id AND u.score > 50)",
    "SELECT u.id, u.score FROM users u WHERE EXISTS (SELECT 1 FROM teams t WHERE t.id = u.team AND t.title LIKE 'b%')",
    "SELECT u.id, (SELECT title FROM teams WHERE id = u.team) FROM users u",
    "SELECT count(*), sum(score), max(name) FROM users",
    "SELECT team, count(*), max(score) FROM users GROUP BY team",
    "SELECT team FROM users GROUP BY team HAVING count(*) >= 2",
    "SELECT DISTINCT team FROM users",
    "SELECT id, name, score FROM users ORDER BY score DESC, id LIMIT 3",
    "SELECT name FROM users UNION SELECT title FROM teams",
    "SELECT team FROM users UNION ALL SELECT id FROM teams",
    "WITH big AS (SELECT * FROM users WHERE score > 30) SELECT name, score FROM big",
    "SELECT id, name FROM users WHERE score BETWEEN 20 AND 70",
    "SELECT * FROM users",
    "SELECT t.id, u.id FROM teams t LEFT JOIN users u ON u.team = t.id WHERE u.score > 40 OR u.id IS NULL",
    "SELECT t.id FROM teams t LEFT JOIN users u ON u.team = t.id WHERE u.id IS NULL",
    "SELECT t.title, u.name FROM teams t LEFT JOIN users u ON u.team = t.id AND u.score < 50",
    "SELECT a.id, b.id FROM users a JOIN users b ON a.team = b.team AND a.id < b.id",
    "SELECT u.id, t.title, v.name FROM users u JOIN teams t ON t.id = u.team LEFT JOIN users v ON v.name = t.title",
    "SELECT id, upper(name) || '!', CASE WHEN score > 50 THEN 'hi' ELSE 'lo' END FROM users WHERE name LIKE '%a%'",
    "SELECT coalesce(t.title, '-'), count(u.id) FROM users u LEFT JOIN teams t ON t.id = u.team GROUP BY 1",
];

/// A small deterministic PRNG (xorshift64*).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_statement(r: &mut Rng) -> Value {
    const NAMES: &[&str] = &["ann", "bob", "cat", "dan", "eve", "red", "blue"];
    const TITLES: &[&str] = &["red", "rose", "blue", "green", "ruby", "ann"];
    let uid = r.below(16) + 1;
    let tid = r.below(5) + 1;
    let team = if r.below(6) == 0 {
        Value::Null
    } else {
        json!(tid)
    };
    match r.below(11) {
        10 => json!([
            "UPDATE OR IGNORE users SET id = ? WHERE id = ?",
            [r.below(16) + 1, uid]
        ]),
        0..=2 => json!([
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)",
            [uid, NAMES[r.below(7) as usize], team, r.below(100)]
        ]),
        3 => json!([
            "UPDATE users SET score = ? WHERE id = ?",
            [r.below(100), uid]
        ]),
        4 => json!(["UPDATE users SET team = ? WHERE id = ?", [team, uid]]),
        5 => json!([
            "UPDATE users SET name = ? WHERE id = ?",
            [NAMES[r.below(7) as usize], uid]
        ]),
        6 => json!(["DELETE FROM users WHERE id = ?", [uid]]),
        7 => json!([
            "INSERT OR REPLACE INTO teams VALUES (?, ?)",
            [tid, TITLES[r.below(6) as usize]]
        ]),
        8 => json!([
            "UPDATE teams SET title = ? WHERE id = ?",
            [TITLES[r.below(6) as usize], tid]
        ]),
        _ => json!(["DELETE FROM teams WHERE id = ?", [tid]]),
    }
}

async fn random_workload_all_shapes(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    // `SUBS_SEED=<n>` explores other workloads.
    let seed = std::env::var("SUBS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut r = Rng((seed ^ (proto as u64 + 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let seed: Vec<Value> = (0..12).map(|_| random_statement(&mut r)).collect();
    w.write(&Value::Array(seed)).await;
    w.write(&json!([
        "INSERT OR REPLACE INTO teams VALUES (1, 'red'), (2, 'blue'), (3, 'rose')"
    ]))
    .await;

    let mut subs = Vec::new();
    for q in QUERIES {
        let s = Sub::post(&node.api(proto).with_nodelay(), &json!(q)).await;
        let fresh = w.query(&json!(q)).await.query_out();
        assert_eq!(s.columns, fresh.columns, "column names of {q}");
        assert_eq!(s.state(), multiset(&fresh.ok_rows()), "initial rows of {q}");
        subs.push(s);
    }
    for round in 0..12 {
        for _ in 0..4 {
            let n = r.below(4) + 1;
            let stmts: Vec<Value> = (0..n).map(|_| random_statement(&mut r)).collect();
            w.write(&Value::Array(stmts)).await;
        }
        for (s, q) in subs.iter_mut().zip(QUERIES) {
            s.sync(&w, &json!(q)).await;
        }
        // A late joiner of every subscription sees exactly the same state and row ids.
        if round % 4 == 3 {
            for s in subs.iter_mut() {
                let j = Sub::get(&node.api(proto).with_nodelay(), &s.id).await;
                while s.last < j.eoq_change_id {
                    s.change().await;
                }
                assert_eq!(
                    crate::client::rows_json(&j.rows),
                    crate::client::rows_json(&s.rows),
                    "joined snapshot of {:?}",
                    s.id
                );
            }
        }
    }
    let total: u64 = subs.iter().map(|s| s.last).sum();
    assert!(
        total > 50,
        "the workload should have produced many changes: {total}"
    );
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}

/// Parameters in every position (projection, JOIN ON, subquery, CTE, BETWEEN, IN list,
/// LIKE … ESCAPE, CASE, LIMIT/OFFSET, numbered `?NNN`, a named parameter used twice) and of
/// every type, including text that looks like SQL: a subscription must see the same rows
/// as `/v1/queries` of the same statement, initially and after writes.
async fn parameters_everywhere(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO teams VALUES (1, 'red'), (2, 'it''s'), (3, 'x'' OR 1=1 --')",
        "INSERT INTO users VALUES (1, 'ann', 1, 10), (2, 'b_b', 2, 20), (3, 'cat', 3, 30), (4, 'dan', 1, 40)"
    ]))
    .await;
    let stmts = [
        json!(["SELECT ?, id FROM users WHERE score > ?", ["tag", 15]]),
        json!(["SELECT u.id, t.title FROM users u JOIN teams t ON t.id = u.team AND t.title <> ? WHERE u.score < ?", ["red", 35]]),
        json!(["SELECT id FROM users WHERE team IN (SELECT id FROM teams WHERE title = ?)", ["it's"]]),
        json!(["SELECT id FROM users WHERE team IN (SELECT id FROM teams WHERE title = ?)", ["x' OR 1=1 --"]]),
        json!(["WITH s AS (SELECT * FROM users WHERE score >= ?) SELECT name FROM s WHERE id <> ?", [20, 3]]),
        json!(["SELECT id FROM users WHERE score BETWEEN ? AND ? OR id IN (?, ?)", [15, 25, 4, 99]]),
        json!(["SELECT id, CASE WHEN score > ? THEN ? ELSE ? END FROM users", [25, "hi", 0.5]]),
        json!(["SELECT id FROM users ORDER BY score DESC LIMIT ? OFFSET ?", [2, 1]]),
        json!(["SELECT id FROM users WHERE score > ?2 AND id < ?1", [4, 10]]),
        json!(["SELECT id FROM users WHERE score > :x OR id = :x", {":x": 3}]),
        json!({"query": "SELECT id FROM users WHERE team = @t OR name = $n", "named_params": {"@t": 2, "$n": "dan"}}),
        json!(["SELECT id, ? FROM users WHERE ? IS NULL", [[0, 255], null]]),
        json!(["SELECT id FROM users WHERE score > ? AND id > ?", [-9223372036854775808i64, i64::MIN]]),
        json!("SELECT id FROM users WHERE score > 25; "),
        json!("SELECT id /* ? */ FROM users -- trailing ?\n WHERE name <> '?'"),
    ];
    let mut subs = Vec::new();
    for st in &stmts {
        let s = Sub::post(&node.api(proto).with_nodelay(), st).await;
        let fresh = w.query(st).await.query_out();
        assert_eq!(s.columns.len(), fresh.columns.len(), "columns of {st}");
        assert_eq!(
            s.state(),
            multiset(&fresh.ok_rows()),
            "initial rows of {st}"
        );
        subs.push(s);
    }
    w.write(&json!([
        "UPDATE users SET score = 26 WHERE id = 1",
        "INSERT INTO users VALUES (5, 'bxb', 2, 22), (6, 'b_x', 3, 18)",
        "UPDATE teams SET title = 'red' WHERE id = 2",
        "DELETE FROM users WHERE id = 4"
    ]))
    .await;
    for (s, st) in subs.iter_mut().zip(&stmts) {
        s.sync(&w, st).await;
    }
}

/// `LIKE ? ESCAPE ?` with both parameters bound: accepted by `/v1/queries`, so a
/// subscription must accept it too and return the same rows.
async fn like_escape_parameter(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO users VALUES (1, 'b_b', 1, 1), (2, 'bxb', 1, 1)"
    ]))
    .await;
    let st = json!([
        "SELECT id FROM users WHERE name LIKE ? ESCAPE ?",
        ["b!_%", "!"]
    ]);
    assert_eq!(w.rows(&st).await, [[json!(1)]]);
    let mut s = Sub::post(&node.api(proto).with_nodelay(), &st).await;
    assert_eq!(s.state(), rows(json!([[1]])));
    w.write(&json!(["INSERT INTO users VALUES (3, 'b_c', 1, 1)"]))
        .await;
    s.sync(&w, &st).await;
}

/// The `columns` event names the columns exactly as `/v1/queries` (SQLite on the statement
/// as written) does: expressions keep their original spelling and parameters stay `?`.
async fn column_names_match_queries(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    let stmts = [
        json!("SELECT id AS ident, Name, score FROM users"),
        json!("select id, score+1, case when score>1 then 'x' end, upper(name)||'!' from users"),
        json!(["SELECT ?, id, ? + score FROM users", ["tag", 1]]),
    ];
    for st in &stmts {
        let s = Sub::post(&node.api(proto).with_nodelay(), st).await;
        let fresh = w.query(st).await.query_out();
        assert_eq!(s.columns, fresh.columns, "columns of {st}");
    }
}
