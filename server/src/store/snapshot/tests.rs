//! Snapshot export and import on real database files.

use super::*;
use crate::store::tests::{sets_of, tx};
use tempfile::TempDir;

const SCHEMA: &str = "
CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT, score INTEGER DEFAULT 0);
CREATE TABLE tags (k TEXT NOT NULL, v TEXT NOT NULL, PRIMARY KEY (k, v));
CREATE INDEX users_name ON users (name);
";

fn open(dir: &TempDir, name: &str, schema: &str) -> Store {
    let mut s = Store::open(&dir.path().join(name)).unwrap();
    s.apply_schema(schema).unwrap();
    s
}

/// A store holding its own writes (with a delete and a cleared version) and a third node's.
fn populated(dir: &TempDir) -> (Store, Store) {
    let mut other = open(dir, "other.db", SCHEMA);
    tx(&mut other, &["INSERT INTO users VALUES (100, 'o', 1)"]);
    tx(&mut other, &["INSERT INTO tags VALUES ('x', 'y')"]);
    let mut src = open(dir, "src.db", SCHEMA);
    tx(
        &mut src,
        &[
            "INSERT INTO users VALUES (1, 'a', 1)",
            "INSERT INTO users VALUES (2, 'b', 2)",
        ],
    );
    tx(&mut src, &["UPDATE users SET score = 9 WHERE id = 1"]);
    tx(&mut src, &["DELETE FROM users WHERE id = 2"]);
    tx(&mut src, &["INSERT INTO tags VALUES ('k', 'v')"]);
    src.apply_changesets(&sets_of(&other, other.actor_id()))
        .unwrap();
    (src, other)
}

#[test]
fn a_fresh_store_imports_tables_clocks_and_versions() {
    let dir = TempDir::new().unwrap();
    let (src, other) = populated(&dir);
    let file = dir.path().join("snap.db");
    assert!(write(src.conn(), &file).unwrap() > 0);

    let mut dst = open(&dir, "dst.db", SCHEMA);
    assert!(dst.holds_nothing());
    dst.conn()
        .execute(
            "INSERT INTO __vd_members VALUES (x'01', '127.0.0.1:9', 'alive', 1)",
            [],
        )
        .unwrap();
    let imported = dst.import_snapshot(&file).unwrap();
    assert!(
        imported.whole_pages,
        "identical schemas: pages are copied whole"
    );
    assert_eq!(imported.tables, vec!["users", "tags"]);
    assert_eq!(
        imported.rows, 4,
        "users 1 and 100 (2 is deleted); tags (k,v), (x,y)"
    );
    assert_eq!(imported.versions, 6);
    assert!(!dst.holds_nothing());

    assert_eq!(dst.dump_tables().unwrap(), src.dump_tables().unwrap());
    assert_ne!(
        dst.actor_id(),
        src.actor_id(),
        "the importer keeps its identity"
    );
    // It now serves both origins' versions exactly as the source does.
    for actor in [src.actor_id(), other.actor_id()] {
        assert_eq!(sets_of(&dst, actor), sets_of(&src, actor));
        assert_eq!(
            dst.shared().book.read().unwrap().get(&actor),
            src.shared().book.read().unwrap().get(&actor)
        );
    }
    // Its own writes start at version 1 and merge on the source like any peer's.
    assert_eq!(
        tx(&mut dst, &["UPDATE users SET name = 'z' WHERE id = 1"]),
        Some(1)
    );
    let mut src = src;
    src.apply_changesets(&sets_of(&dst, dst.actor_id()))
        .unwrap();
    assert_eq!(dst.dump_tables().unwrap(), src.dump_tables().unwrap());
    // Its own member list stays; nothing of the source's private state came along.
    let members: Vec<String> = dst
        .conn()
        .prepare("SELECT address FROM __vd_members")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(members, vec!["127.0.0.1:9"]);
}

#[test]
fn local_tables_with_rows_are_kept_by_a_row_by_row_import() {
    let dir = TempDir::new().unwrap();
    let (src, other) = populated(&dir);
    let file = dir.path().join("snap.db");
    write(src.conn(), &file).unwrap();
    let mut dst = open(&dir, "dst.db", SCHEMA);
    tx(
        &mut dst,
        &[
            "CREATE TABLE scratch (x INTEGER)",
            "INSERT INTO scratch VALUES (42)",
        ],
    );
    let imported = dst.import_snapshot(&file).unwrap();
    assert!(
        !imported.whole_pages,
        "the local table must not be overwritten"
    );
    assert_eq!(imported.rows, 4);
    assert_eq!(dst.dump_tables().unwrap(), src.dump_tables().unwrap());
    for actor in [src.actor_id(), other.actor_id()] {
        assert_eq!(sets_of(&dst, actor), sets_of(&src, actor));
    }
    let kept: i64 = dst
        .conn()
        .query_row("SELECT x FROM scratch", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 42);
    assert_eq!(
        tx(&mut dst, &["UPDATE users SET name = 'z' WHERE id = 1"]),
        Some(1)
    );
}

#[test]
fn the_import_survives_a_restart() {
    let dir = TempDir::new().unwrap();
    let (src, _) = populated(&dir);
    let file = dir.path().join("snap.db");
    write(src.conn(), &file).unwrap();
    let mut dst = open(&dir, "dst.db", SCHEMA);
    let me = dst.actor_id();
    dst.import_snapshot(&file).unwrap();
    drop(dst);
    let mut dst = open(&dir, "dst.db", SCHEMA);
    assert_eq!(dst.actor_id(), me);
    assert_eq!(dst.dump_tables().unwrap(), src.dump_tables().unwrap());
    assert_eq!(tx(&mut dst, &["DELETE FROM tags"]), Some(1));
}

#[test]
fn a_snapshot_with_other_columns_is_refused_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let (mut src, _) = populated(&dir);
    src.apply_schema(&SCHEMA.replace(
        "score INTEGER DEFAULT 0",
        "score INTEGER DEFAULT 0, extra TEXT",
    ))
    .unwrap();
    let file = dir.path().join("snap.db");
    write(src.conn(), &file).unwrap();
    let mut dst = open(&dir, "dst.db", SCHEMA);
    let err = dst.import_snapshot(&file).unwrap_err().to_string();
    assert!(
        err.contains("users") && err.contains("different columns"),
        "{err}"
    );
    assert!(dst.holds_nothing());
    assert!(dst
        .dump_tables()
        .unwrap()
        .iter()
        .all(|(_, rows)| rows.is_empty()));
    // Still a working node: the snapshot was detached and capture is back.
    assert_eq!(
        tx(&mut dst, &["INSERT INTO users VALUES (7, 'q', 0)"]),
        Some(1)
    );
    assert_eq!(
        crate::store::Store::changes(&dst, dst.actor_id(), 1..=1)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_store_with_writes_of_its_own_refuses_a_snapshot() {
    let dir = TempDir::new().unwrap();
    let (src, _) = populated(&dir);
    let file = dir.path().join("snap.db");
    write(src.conn(), &file).unwrap();
    let mut dst = open(&dir, "dst.db", SCHEMA);
    tx(&mut dst, &["INSERT INTO users VALUES (1, 'mine', 0)"]);
    assert!(!dst.holds_nothing());
    let err = dst.import_snapshot(&file).unwrap_err().to_string();
    assert!(err.contains("writes of its own"), "{err}");
    let dump = dst.dump_tables().unwrap();
    let users = dump.iter().find(|(t, _)| t == "users").unwrap();
    assert_eq!(users.1.len(), 1);
}

#[test]
fn garbage_is_not_a_snapshot() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("snap.db");
    std::fs::write(&file, vec![7u8; 8192]).unwrap();
    let mut dst = open(&dir, "dst.db", SCHEMA);
    assert!(dst.import_snapshot(&file).is_err());
    assert!(dst.holds_nothing());
    assert_eq!(
        tx(&mut dst, &["INSERT INTO users VALUES (7, 'q', 0)"]),
        Some(1)
    );
}

#[test]
fn remote_data_is_replaced_and_what_the_snapshot_lacks_reads_as_missing() {
    let dir = TempDir::new().unwrap();
    let mut other = open(&dir, "other.db", SCHEMA);
    tx(&mut other, &["INSERT INTO users VALUES (100, 'o', 1)"]);
    tx(&mut other, &["INSERT INTO users VALUES (101, 'p', 1)"]);
    let all = sets_of(&other, other.actor_id());
    let mut src = open(&dir, "src.db", SCHEMA);
    tx(&mut src, &["INSERT INTO users VALUES (1, 'a', 1)"]);
    src.apply_changesets(&all[..1]).unwrap();
    let file = dir.path().join("snap.db");
    write(src.conn(), &file).unwrap();

    // dst already got both of other's versions (say by broadcast), but never wrote.
    let mut dst = open(&dir, "dst.db", SCHEMA);
    dst.apply_changesets(&all).unwrap();
    dst.import_snapshot(&file).unwrap();
    assert_eq!(dst.dump_tables().unwrap(), src.dump_tables().unwrap());
    let book = dst.shared().book.read().unwrap().clone();
    assert!(book.knows(&other.actor_id(), 1));
    assert!(
        !book.knows(&other.actor_id(), 2),
        "version 2 is not in the snapshot: sync must fetch it again"
    );
    assert!(book.knows(&src.actor_id(), 1));
    drop(book);
    // Fetching it again completes the picture.
    dst.apply_changesets(&all[1..]).unwrap();
    let users = dst.dump_tables().unwrap();
    let users = &users.iter().find(|(t, _)| t == "users").unwrap().1;
    assert_eq!(users.len(), 3);
}

#[test]
fn leftover_snapshot_files_are_removed() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("state.db");
    for f in [
        "state.db.snapshot-in",
        "state.db.snapshot-out-123",
        "other.db.snapshot-in",
    ] {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    crate::cluster::snapshot::remove_leftovers(&db);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["other.db.snapshot-in"]);
}
