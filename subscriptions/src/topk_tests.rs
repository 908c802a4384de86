//! Tests of the `ORDER BY … LIMIT` window ([`super`]).

use super::*;
use crate::matview::Changes;
use crate::stmt::Statement;

struct S;
impl Schema for S {
    fn primary_key(&self, _: &str) -> Option<Vec<String>> {
        Some(vec!["id".into()])
    }
}

fn key(id: i64) -> Changes {
    let mut c = Changes::new();
    c.entry("t".into())
        .or_default()
        .insert(pack::pack_owned(&[Value::Integer(id)]));
    c
}

#[test]
fn only_changes_that_reach_the_window_rerun() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER);
         INSERT INTO t VALUES (1, 10), (2, 20), (3, 30), (4, 30), (5, 50);
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 15)
         INSERT INTO t SELECT 100 + i, 100 + i FROM n;",
    )
    .unwrap();
    let a = crate::analyze(
        &conn,
        &Statement::new("SELECT id, v FROM t ORDER BY v DESC LIMIT 2"),
        &S,
    )
    .unwrap();
    let plan = a.topk.clone().expect("guarded");
    let mut g = Guard::new(plan);
    assert!(
        !matches!(g.refresh(&conn, &key(1)).unwrap(), Outcome::Unchanged),
        "unknown window: re-run"
    );
    g.capture(&conn).unwrap();
    // Window (LIMIT 2 and a slack of 16): the 16 rows above 50, 5 (50) and one of the
    // tied 30s: both 30s are in it.
    assert!(
        matches!(g.refresh(&conn, &key(1)).unwrap(), Outcome::Unchanged),
        "10 → 10, far below"
    );
    assert!(
        !matches!(g.refresh(&conn, &key(3)).unwrap(), Outcome::Unchanged),
        "a tied boundary row"
    );
    conn.execute("UPDATE t SET v = 25 WHERE id = 1", [])
        .unwrap();
    assert!(
        matches!(g.refresh(&conn, &key(1)).unwrap(), Outcome::Unchanged),
        "25 stays below 30"
    );
    conn.execute("UPDATE t SET v = 30 WHERE id = 1", [])
        .unwrap();
    assert!(
        !matches!(g.refresh(&conn, &key(1)).unwrap(), Outcome::Unchanged),
        "ties with the boundary"
    );
    conn.execute("DELETE FROM t WHERE id = 2", []).unwrap();
    assert!(
        matches!(g.refresh(&conn, &key(2)).unwrap(), Outcome::Unchanged),
        "was outside, now gone"
    );
    assert!(matches!(
        g.refresh(&conn, &Changes::new()).unwrap(),
        Outcome::Unchanged
    ));
    // Fewer rows than the window: every change counts.
    conn.execute("DELETE FROM t WHERE id > 1", []).unwrap();
    g.capture(&conn).unwrap();
    conn.execute("INSERT INTO t VALUES (9, 1)", []).unwrap();
    assert!(!matches!(
        g.refresh(&conn, &key(9)).unwrap(),
        Outcome::Unchanged
    ));
}

/// Found in review: each of these would slide to a wrong result or fail.
#[test]
fn queries_the_window_cannot_follow_are_not_slid() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, w INTEGER);
         INSERT INTO t VALUES (1, 1, 1), (2, 2, 2), (3, 3, 3);",
    )
    .unwrap();
    for sql in [
        // ORDER BY finds the alias `v` (`-v`), the window would read the column.
        "SELECT id, -v AS v FROM t ORDER BY v LIMIT 2",
        "SELECT id, -v AS \"V\" FROM t ORDER BY (v) LIMIT 2",
        // Result column positions, however written.
        "SELECT id, v, w FROM t ORDER BY (3), id LIMIT 2",
        "SELECT id, v FROM t ORDER BY +2 LIMIT 2",
        // Quoted names are the same functions: an aggregate, a volatile one.
        "SELECT id, \"json_group_array\"(v) FROM t ORDER BY id LIMIT 1",
        "SELECT id, [random]() FROM t ORDER BY id LIMIT 1",
    ] {
        let a = crate::analyze(&conn, &Statement::new(sql), &S).unwrap();
        assert!(a.topk.is_none(), "{sql}");
    }
    // The largest LIMIT: guarded without sliding (its window cannot double).
    let sql = "SELECT id, v FROM t ORDER BY v LIMIT 9223372036854775807 OFFSET 1";
    let a = crate::analyze(&conn, &Statement::new(sql), &S).unwrap();
    let mut g = Guard::new(a.topk.clone().expect("guarded"));
    g.capture(&conn).unwrap();
    assert!(matches!(g.refresh(&conn, &key(1)).unwrap(), Outcome::Rerun));
    // A column added under `SELECT *`: the kept result columns are stale.
    let sql = "SELECT * FROM t ORDER BY v LIMIT 1";
    let a = crate::analyze(&conn, &Statement::new(sql), &S).unwrap();
    let mut g = Guard::new(a.topk.clone().expect("guarded"));
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
         INSERT INTO t SELECT i, i, i FROM n;",
    )
    .unwrap();
    g.capture(&conn).unwrap();
    conn.execute_batch(
        "ALTER TABLE t ADD COLUMN z INTEGER DEFAULT 5; UPDATE t SET v = 0 WHERE id = 2",
    )
    .unwrap();
    assert!(
        matches!(g.refresh(&conn, &key(2)).unwrap(), Outcome::Rerun),
        "changed, and only a re-run can say"
    );
}

#[test]
fn a_window_grown_by_entering_rows_is_cut_where_rows_differ() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER);
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99)
         INSERT INTO t SELECT i, 100 + i FROM n;",
    )
    .unwrap();
    let sql = "SELECT id, v FROM t ORDER BY v LIMIT 1";
    let a = crate::analyze(&conn, &Statement::new(sql), &S).unwrap();
    let mut g = Guard::new(a.topk.clone().expect("guarded"));
    g.capture(&conn).unwrap();
    let captured = g.plan.captured() as usize;
    // Rows entering below the boundary, lowest last: each is the new first row.
    for i in 0..60i64 {
        let id = 1000 + i;
        conn.execute("INSERT INTO t VALUES (?1, ?2)", [id, 99 - i])
            .unwrap();
        let Outcome::Slid(r) = g.refresh(&conn, &key(id)).unwrap() else {
            panic!("slid")
        };
        assert_eq!(r, vec![vec![Value::Integer(id), Value::Integer(99 - i)]]);
        let w = g.window.as_ref().expect("a window");
        assert!(
            w.full && w.members.len() <= 2 * captured,
            "{}",
            w.members.len()
        );
    }
    // The first rows to enter were cut off with the rest past the new boundary.
    conn.execute("UPDATE t SET v = 98 WHERE id = 1000", [])
        .unwrap();
    assert!(
        matches!(g.refresh(&conn, &key(1000)).unwrap(), Outcome::Unchanged),
        "cut off: outside"
    );
    conn.execute("UPDATE t SET v = 0 WHERE id = 1000", [])
        .unwrap();
    let Outcome::Slid(r) = g.refresh(&conn, &key(1000)).unwrap() else {
        panic!("slid")
    };
    assert_eq!(r, vec![vec![Value::Integer(1000), Value::Integer(0)]]);
}

/// Random single-row writes (ties, NULLs, deletes, inserts): after each, the slid window's
/// result, or a re-run where it declines, equals a fresh run of the query.
#[test]
fn the_slid_window_gives_the_fresh_result() {
    // (query, rows, a value that sorts after every other)
    for (sql, rows, last) in [
        ("SELECT id, v FROM t ORDER BY v DESC LIMIT 3", 40, -100),
        (
            "SELECT id, v * 2 AS w FROM t WHERE v IS NOT NULL ORDER BY v, id LIMIT 2 OFFSET 2",
            40,
            100,
        ),
        ("SELECT * FROM t ORDER BY v NULLS LAST LIMIT 4", 6, 100),
    ] {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
            .unwrap();
        for i in 0..rows {
            conn.execute("INSERT INTO t VALUES (?1, ?2)", [i, i * 7 % 23])
                .unwrap();
        }
        let a = crate::analyze(&conn, &Statement::new(sql), &S).unwrap();
        let mut g = Guard::new(a.topk.clone().expect("guarded"));
        g.capture(&conn).unwrap();
        let fresh = || {
            let mut stmt = conn.prepare(sql).unwrap();
            let mut r = read_rows(&mut stmt, &[]).unwrap();
            r.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            r
        };
        let mut held = fresh();
        let mut seed: u64 = 7;
        let mut slid = 0;
        for k in 0..600 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut id = (seed >> 33) as i64 % (rows + 5);
            let v = (seed >> 45) as i64 % 30;
            match (seed >> 20) % 6 {
                0 => conn.execute("DELETE FROM t WHERE id = ?1", [id]),
                1 => conn.execute("UPDATE t SET v = NULL WHERE id = ?1", [id]),
                // A row of the result moves past every other: the window drains.
                2 | 3 if k % 200 > 150 && !held.is_empty() => {
                    let Value::Integer(first) = held[0][0] else {
                        panic!("an id")
                    };
                    id = first;
                    conn.execute("UPDATE t SET v = ?1 WHERE id = ?2", [last, id])
                }
                _ => conn.execute("INSERT OR REPLACE INTO t VALUES (?1, ?2)", [id, v]),
            }
            .unwrap();
            match g.refresh(&conn, &key(id)).unwrap() {
                Outcome::Unchanged => {
                    assert_eq!(held, fresh(), "{sql}: skipped a change that mattered");
                }
                Outcome::Slid(mut r) => {
                    slid += 1;
                    r.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
                    assert_eq!(r, fresh(), "{sql}: slid to a wrong result");
                    held = r;
                }
                Outcome::Rerun => {
                    g.capture(&conn).unwrap();
                    held = fresh();
                }
            }
        }
        assert!(slid > 50, "{sql}: the window slid only {slid} times");
    }
}
