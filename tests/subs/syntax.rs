//! SQLite syntax in subscriptions, differentially: every statement here is valid SQLite that
//! `/v1/queries` runs, so `POST /v1/subscriptions` must accept it and produce the same rows
//! (initially and after writes). The subscription engine re-parses and re-prints queries, so
//! these guard against statements being rejected or, worse, silently changing meaning.
//! Each test reports every failing statement at once.

use crate::client::{multiset, Sub};
use crate::support::{Api, NodeDir, Proto};
use crate::{both_protocols, SCHEMA};
use serde_json::json;

both_protocols!(
    accepted_syntax_matches_queries,
    numeric_literals_keep_their_meaning,
    sqlite_operators_accepted,
);

async fn seeded(proto: Proto) -> (NodeDir, crate::support::Node, Api) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO teams VALUES (1, 'red'), (2, 'blue')",
        "INSERT INTO users VALUES (1, 'ann', 1, 10), (2, 'Bob', 2, 21), (3, 'cat', NULL, 30)"
    ]))
    .await;
    (dir, node, w)
}

/// Subscribes to each statement and compares with `/v1/queries`, before and after a write;
/// fails listing every statement that is rejected or gives different rows.
async fn differential(node: &crate::support::Node, proto: Proto, w: &Api, stmts: &[&str]) {
    let mut failures = Vec::new();
    let mut subs = Vec::new();
    for sql in stmts {
        let st = json!(sql);
        let fresh = w.query(&st).await.query_out().ok_rows();
        let stream = node
            .api(proto)
            .with_nodelay()
            .open_post("/v1/subscriptions", &st)
            .await;
        if stream.status.as_u16() != 200 {
            let r = stream.into_resp(crate::client::EVENT_TIMEOUT).await;
            failures.push(format!("{sql:?}: rejected ({}): {}", r.status, r.text()));
            continue;
        }
        let mut s = Sub::from_stream(stream).await;
        s.read_snapshot().await;
        if s.state() != multiset(&fresh) {
            failures.push(format!(
                "{sql:?}: different rows: subscription {:?} vs query {:?}",
                s.state(),
                multiset(&fresh)
            ));
            continue;
        }
        subs.push((st, s));
    }
    w.write(&json!([
        "UPDATE users SET score = 17, team = 2 WHERE id = 1",
        "INSERT INTO users VALUES (4, 'Ann', NULL, 5)",
        "UPDATE teams SET title = 'ann' WHERE id = 2"
    ]))
    .await;
    for (st, s) in &mut subs {
        s.sync(w, st).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} valid SQLite statements fail as subscriptions:\n{}",
        failures.len(),
        stmts.len(),
        failures.join("\n")
    );
}

/// Constructs that work today (a regression guard).
async fn accepted_syntax_matches_queries(proto: Proto) {
    let (_dir, node, w) = seeded(proto).await;
    differential(
        &node,
        proto,
        &w,
        &[
            "SELECT id FROM users WHERE team NOTNULL",
            "SELECT id FROM users WHERE team NOT NULL",
            "SELECT id FROM users WHERE name = 'ANN' COLLATE NOCASE",
            "SELECT \"id\" FROM \"users\"",
            "SELECT [id] FROM [users]",
            "SELECT `id` FROM `users`",
            "SELECT id FROM users WHERE (team, score) = (1, 10)",
            "SELECT CAST(score AS TEXT), iif(score > 15, 1, 0) FROM users",
            "SELECT id FROM users WHERE name LIKE 'a%' ESCAPE '\\'",
            "SELECT id FROM users ORDER BY id LIMIT 2, 1",
            "SELECT 1e3, .5, 1.5e-3, id FROM users",
            "SELECT id, score % 7, score | 1, score & 3, -score, +score FROM users",
            "SELECT id FROM users NATURAL JOIN teams",
            "SELECT u.id FROM users u JOIN teams t USING (id)",
            "SELECT u.id FROM users AS u, teams AS t WHERE t.id = u.team",
            "SELECT count(DISTINCT team), group_concat(name, ',') FROM users",
            "SELECT count(*) FILTER (WHERE score > 10) FROM users",
            "SELECT id, row_number() OVER (ORDER BY score) FROM users",
            "SELECT id, rank() OVER w FROM users WINDOW w AS (ORDER BY score)",
            "SELECT CASE team WHEN 1 THEN 'a' ELSE 'b' END FROM users",
            "SELECT id FROM users WHERE team IS NOT DISTINCT FROM 1",
            "SELECT printf('%d!', score), substr(name, 2), hex(name) FROM users",
            "SELECT id FROM users WHERE rowid > 1",
            "SELECT id FROM users WHERE name = \"ann\"",
            "SELECT id FROM users WHERE name = 'it''s' OR name = 'a\nb'",
            "SELECT \"a\"\"b\", id, TRUE, FALSE FROM users",
            "SELECT id FROM users WHERE name COLLATE NOCASE = 'ANN'",
            "SELECT id FROM users WHERE score > 9223372036854775808 OR score > -9223372036854775808",
            "SELECT id FROM users WHERE id == 1 OR id != 2",
            "SELECT id FROM users /* multi\nline */ WHERE id = 2",
            "SELECT id FROM users WHERE NOT EXISTS (SELECT 1 FROM teams WHERE teams.id = users.team)",
            "SELECT id, score FROM users ORDER BY score DESC NULLS LAST LIMIT 2",
            "SELECT id FROM users WHERE team IN ()",
            "SELECT id FROM users WHERE score NOT BETWEEN 11 AND 29",
            "SELECT * FROM users, json_each('[1,2]')",
            "SELECT id FROM (SELECT * FROM users) AS s",
            "SELECT id FROM users UNION SELECT id FROM teams ORDER BY 1 LIMIT 2",
            "SELECT id FROM users EXCEPT SELECT id FROM teams",
            "SELECT id FROM users INTERSECT SELECT id FROM teams",
            "SELECT json_extract('{\"a\":1}', '$.a'), json('{\"a\": 1}') -> '$.a', id FROM users",
        ],
    )
    .await;
}

/// Hexadecimal and digit-separated integer literals: silently re-read as a BLOB (`0x10` →
/// `X'10'`) or as a column alias (`0X1F` → `0 AS X1F`, `1_000` → `1 AS _000`).
async fn numeric_literals_keep_their_meaning(proto: Proto) {
    let (_dir, node, w) = seeded(proto).await;
    differential(
        &node,
        proto,
        &w,
        &[
            "SELECT id FROM users WHERE score > 0x10",
            "SELECT 0x10, id FROM users",
            "SELECT 0X1F, id FROM users",
            "SELECT id, typeof(0x7fffffffffffffff) FROM users",
            "SELECT 1_000, id FROM users",
            "SELECT id FROM users WHERE score < 1_0",
        ],
    )
    .await;
}

/// SQLite operators and clauses rejected with "query does not parse".
async fn sqlite_operators_accepted(proto: Proto) {
    let (_dir, node, w) = seeded(proto).await;
    differential(
        &node,
        proto,
        &w,
        &[
            "SELECT id FROM users WHERE team IS 1",
            "SELECT id FROM users WHERE team IS NOT 1",
            "SELECT id FROM users WHERE name GLOB 'a*'",
            "SELECT id FROM users WHERE name NOT GLOB 'b*'",
            "SELECT id FROM users WHERE team ISNULL",
            "SELECT id, score << 1, score >> 1 FROM users",
            "SELECT id, ~score FROM users",
            "SELECT id FROM users NOT INDEXED",
            "SELECT id FROM users WHERE name IN ('ann', 'Bob') COLLATE NOCASE",
        ],
    )
    .await;
}
