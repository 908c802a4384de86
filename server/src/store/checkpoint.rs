//! WAL checkpoints on a background thread, so client writes never stall on a checkpoint's
//! page copying and fsync. The writer runs with `wal_autocheckpoint = 0`; this thread copies
//! the WAL back into the database a few times per second (PASSIVE: never blocks readers or
//! the writer) and truncates it when it has grown large.

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// WAL size above which the checkpointer asks for a TRUNCATE checkpoint.
const TRUNCATE_ABOVE: u64 = 256 * 1024 * 1024;

/// Stops the checkpointer when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn wal_size(db: &Path) -> u64 {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    std::fs::metadata(PathBuf::from(p))
        .map(|m| m.len())
        .unwrap_or(0)
}

pub fn spawn(db: &Path) -> Checkpointer {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let db = db.to_path_buf();
    std::thread::Builder::new()
        .name("vd-checkpoint".into())
        .spawn(move || {
            let conn = match Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "checkpointer could not open the database; WAL will grow");
                    return;
                }
            };
            let _ = conn.busy_timeout(Duration::from_secs(5));
            let mut last = 0;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let size = wal_size(&db);
                if size == last {
                    continue;
                }
                let mode = if size > TRUNCATE_ABOVE { "TRUNCATE" } else { "PASSIVE" };
                if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                last = wal_size(&db);
            }
        })
        .expect("spawning the checkpoint thread");
    Checkpointer { stop }
}
