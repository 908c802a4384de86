//! WAL checkpoints on a background thread, so client writes never stall on a checkpoint's
//! page copying and fsync. The writer runs with `wal_autocheckpoint = 0`; this thread copies
//! the WAL back into the database several times per second (PASSIVE: never blocks readers or
//! the writer).
//!
//! Under continuous writes a passive checkpoint never catches up with the writer, so SQLite
//! never rewinds the WAL and the file grows: every commit then appends fresh pages, which
//! costs the writer page-cache allocation in the kernel. Once the WAL passes
//! [`RESTART_ABOVE`], the thread asks for a RESTART checkpoint with a short busy timeout:
//! most frames are already copied, so it holds writers back only for a moment, and the next
//! write starts again at the top of the (already cached) file. If readers keep that from
//! working, the file is truncated when it passes [`TRUNCATE_ABOVE`].

use super::wal_path;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// WAL size above which the checkpointer rewinds the WAL (RESTART checkpoint).
const RESTART_ABOVE: u64 = 64 * 1024 * 1024;
/// WAL size above which the checkpointer asks for a TRUNCATE checkpoint.
const TRUNCATE_ABOVE: u64 = 256 * 1024 * 1024;
/// How long a RESTART or TRUNCATE checkpoint may wait for readers and the writer.
const BLOCKING_WAIT: Duration = Duration::from_millis(20);
/// Pause between checks of the WAL size.
const INTERVAL: Duration = Duration::from_millis(200);

/// Stops the checkpointer when dropped, and waits for it: a checkpoint left running after
/// its store is gone would compete for the disk with whatever comes next (a restore, a new
/// store on the same machine).
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Size and modification time of the WAL: writes after a rewind do not change the size.
fn wal_state(wal: &Path) -> (u64, Option<std::time::SystemTime>) {
    std::fs::metadata(wal)
        .map(|m| (m.len(), m.modified().ok()))
        .unwrap_or((0, None))
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
}

pub fn spawn(db: &Path) -> Checkpointer {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let db = db.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("vd-checkpoint".into())
        .spawn(move || {
            let conn = match Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "checkpointer could not open the database; WAL will grow");
                    return;
                }
            };
            let _ = conn.busy_timeout(BLOCKING_WAIT);
            let wal = wal_path(&db);
            let mut last = (0, None);
            loop {
                std::thread::park_timeout(INTERVAL);
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let state = wal_state(&wal);
                if state == last {
                    continue;
                }
                if let Err(e) = checkpoint(&conn, "PASSIVE") {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                if state.0 > TRUNCATE_ABOVE {
                    let _ = checkpoint(&conn, "TRUNCATE");
                } else if state.0 > RESTART_ABOVE {
                    // Busy (a reader or the writer held on) is fine: the next round tries again.
                    let _ = checkpoint(&conn, "RESTART");
                }
                last = wal_state(&wal);
            }
        })
        .expect("spawning the checkpoint thread");
    Checkpointer {
        stop,
        thread: Some(thread),
    }
}
