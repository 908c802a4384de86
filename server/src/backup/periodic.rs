//! Periodic snapshots (`[snapshots]`): every `interval_secs` the node writes a consistent,
//! actor-neutral snapshot (the same as `verdigris backup`) into `dir`, then deletes the ones
//! retention no longer keeps.
//!
//! A snapshot is `VACUUM INTO` on a read-only connection: in WAL mode a reader never blocks
//! the writer, so client writes go on while it is written (the background checkpointer may
//! wait at most a few milliseconds for it; see `store::checkpoint`). The file is written
//! under a `.partial-` name and renamed when complete, so the directory only ever lists
//! whole snapshots. Names sort by time: `verdigris-20250102T030405.678Z.db`.
//!
//! Naming and retention are pure functions ([`file_name`], [`expired`]); the task owns its
//! loop and stops with the node's stop signal.

use crate::config::SnapshotsConfig;
use crate::node::Node;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PREFIX: &str = "verdigris-";
const SUFFIX: &str = ".db";
const PARTIAL: &str = ".partial-";

/// Civil date (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The file name of a snapshot taken at `t` (UTC, millisecond precision).
pub fn file_name(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, day) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{PREFIX}{y:04}{mo:02}{day:02}T{:02}{:02}{:02}.{:03}Z{SUFFIX}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

fn is_snapshot_name(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(SUFFIX)
}

/// Which of `snapshots` (name, age) retention deletes: all but the newest `keep`, and those
/// older than `max_age` (`None`: no age limit) — but never the newest one.
pub fn expired(
    snapshots: &[(String, Duration)],
    keep: usize,
    max_age: Option<Duration>,
) -> Vec<String> {
    let mut sorted: Vec<&(String, Duration)> = snapshots.iter().collect();
    // Names sort by time: newest first.
    sorted.sort_by(|a, b| b.0.cmp(&a.0));
    sorted
        .iter()
        .enumerate()
        .filter(|(i, (_, age))| *i > 0 && (*i >= keep || max_age.is_some_and(|m| *age > m)))
        .map(|(_, (name, _))| name.clone())
        .collect()
}

/// Writes one snapshot of `db` into `dir`; returns its path.
pub fn take(db: &Path, dir: &Path) -> Result<PathBuf> {
    let name = file_name(SystemTime::now());
    let partial = dir.join(format!("{PARTIAL}{name}"));
    let done = dir.join(&name);
    super::snapshot_to(db, &partial)?;
    std::fs::rename(&partial, &done)
        .with_context(|| format!("renaming {} to {}", partial.display(), done.display()))?;
    Ok(done)
}

/// Deletes the snapshots in `dir` retention no longer keeps; returns their names.
pub fn prune(dir: &Path, cfg: &SnapshotsConfig) -> Result<Vec<String>> {
    let now = SystemTime::now();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_snapshot_name(&name) {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        found.push((name, now.duration_since(modified).unwrap_or_default()));
    }
    let max_age = (cfg.max_age_secs > 0).then(|| Duration::from_secs(cfg.max_age_secs));
    let gone = expired(&found, cfg.keep, max_age);
    for name in &gone {
        std::fs::remove_file(dir.join(name))
            .with_context(|| format!("deleting old snapshot {name}"))?;
    }
    Ok(gone)
}

/// Creates `dir` and removes partial files a crash left behind.
fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create snapshots.dir {}; make its parent writable by this user or set snapshots.dir elsewhere",
            dir.display()
        )
    })?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(PARTIAL) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Starts the snapshot task if `snapshots.dir` is set. Fails if the directory cannot be
/// prepared, so a misconfigured node stops at startup rather than at its first snapshot.
pub fn start(node: Arc<Node>, mut stop: watch::Receiver<bool>) -> Result<Option<JoinHandle<()>>> {
    let cfg = node.config.snapshots.clone();
    let Some(dir) = cfg.dir.clone() else {
        return Ok(None);
    };
    prepare(&dir)?;
    let period = Duration::from_secs(cfg.interval_secs);
    Ok(Some(tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            next += period;
            let (node2, dir2, cfg2) = (node.clone(), dir.clone(), cfg.clone());
            let started = Instant::now();
            let res = tokio::task::spawn_blocking(move || -> Result<(PathBuf, Vec<String>)> {
                let path = take(&node2.config.db.path, &dir2)?;
                Ok((path, prune(&dir2, &cfg2)?))
            })
            .await;
            let took = started.elapsed();
            match res {
                Ok(Ok((path, pruned))) => {
                    node.metrics.snapshot_done(true, took);
                    tracing::info!(path = %path.display(), ms = took.as_millis() as u64, ?pruned, "snapshot written");
                }
                Ok(Err(e)) => {
                    node.metrics.snapshot_done(false, took);
                    tracing::error!(error = %format!("{e:#}"), dir = %dir.display(), "periodic snapshot failed");
                }
                Err(e) => {
                    node.metrics.snapshot_done(false, took);
                    tracing::error!(error = %e, "periodic snapshot task failed");
                }
            }
            // A snapshot slower than the period: start the next one a full period later
            // rather than back to back.
            let now = tokio::time::Instant::now();
            if next < now {
                next = now + period;
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_and_sort_by_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_735_787_045_678);
        assert_eq!(file_name(t), "verdigris-20250102T030405.678Z.db");
        assert_eq!(file_name(UNIX_EPOCH), "verdigris-19700101T000000.000Z.db");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(file_name(leap).starts_with("verdigris-20000229T"));
        let a = file_name(t);
        let b = file_name(t + Duration::from_millis(1));
        assert!(a < b && is_snapshot_name(&a));
        assert!(!is_snapshot_name(".partial-verdigris-1.db"));
    }

    fn snaps(ages: &[(u32, u64)]) -> Vec<(String, Duration)> {
        ages.iter()
            .map(|(n, age)| (format!("verdigris-{n:04}.db"), Duration::from_secs(*age)))
            .collect()
    }

    #[test]
    fn retention_by_count_and_age_keeps_the_newest() {
        let s = snaps(&[(1, 400), (2, 300), (3, 200), (4, 100)]);
        let mut by_count = expired(&s, 2, None);
        by_count.sort();
        assert_eq!(by_count, ["verdigris-0001.db", "verdigris-0002.db"]);
        let mut by_age = expired(&s, 10, Some(Duration::from_secs(250)));
        by_age.sort();
        assert_eq!(by_age, ["verdigris-0001.db", "verdigris-0002.db"]);
        // Everything is too old: the newest one stays anyway.
        assert_eq!(
            expired(&s, 10, Some(Duration::from_secs(1))).len(),
            3,
            "all but the newest"
        );
        assert!(expired(&s, 1, None)
            .iter()
            .all(|n| n != "verdigris-0004.db"));
        assert!(expired(&[], 1, None).is_empty());
    }
}
