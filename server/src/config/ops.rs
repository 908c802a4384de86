//! `[watchdog]` and `[snapshots]`: Verdigris-only operational settings (Corrosion has no
//! equivalent keys).

use super::ConfigError;
use super::Reader;
use std::path::PathBuf;

/// `[watchdog]`: stall detection and what to do about a stall (see `crate::watchdog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// `runtime_stall_secs` (default 5): the async runtime running no task for this long is a
    /// stall.
    pub runtime_stall_secs: u64,
    /// `writer_stall_secs` (default 120): the writer lock held continuously this long is a
    /// stall (a deadlock or a runaway transaction).
    pub writer_stall_secs: u64,
    /// `exit` (default true): exit with status 70 when a stall lasts `exit_after_secs`, so a
    /// supervisor restarts the node; false only reports it (log, `/v1/health`, metrics).
    pub exit: bool,
    /// `exit_after_secs` (default 30): how long a detected stall may last before the node exits.
    pub exit_after_secs: u64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            runtime_stall_secs: 5,
            writer_stall_secs: 120,
            exit: true,
            exit_after_secs: 30,
        }
    }
}

/// `[snapshots]`: periodic consistent snapshots of the database (see `crate::backup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotsConfig {
    /// `dir` (default none: no periodic snapshots): where snapshots are written.
    pub dir: Option<PathBuf>,
    /// `interval_secs` (default 3600): time between two snapshots.
    pub interval_secs: u64,
    /// `keep` (default 24): most snapshots kept; older ones are deleted.
    pub keep: usize,
    /// `max_age_secs` (default 604800, a week; 0 = no age limit): snapshots older than this
    /// are deleted, except the newest one.
    pub max_age_secs: u64,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        SnapshotsConfig {
            dir: None,
            interval_secs: 3600,
            keep: 24,
            max_age_secs: 7 * 24 * 3600,
        }
    }
}

pub(super) fn watchdog(r: &Reader<'_>) -> Result<WatchdogConfig, ConfigError> {
    let d = WatchdogConfig::default();
    let secs = |key: &str, default: u64| -> Result<u64, ConfigError> {
        Ok(r.count(key, default as usize)? as u64)
    };
    Ok(WatchdogConfig {
        runtime_stall_secs: secs("watchdog.runtime_stall_secs", d.runtime_stall_secs)?,
        writer_stall_secs: secs("watchdog.writer_stall_secs", d.writer_stall_secs)?,
        exit: r.bool("watchdog.exit", d.exit)?,
        exit_after_secs: r.unsigned("watchdog.exit_after_secs", d.exit_after_secs)?,
    })
}

pub(super) fn snapshots(r: &Reader<'_>) -> Result<SnapshotsConfig, ConfigError> {
    let d = SnapshotsConfig::default();
    Ok(SnapshotsConfig {
        dir: r.path("snapshots.dir")?,
        interval_secs: r.count("snapshots.interval_secs", d.interval_secs as usize)? as u64,
        keep: r.count("snapshots.keep", d.keep)?,
        max_age_secs: r.unsigned("snapshots.max_age_secs", d.max_age_secs)?,
    })
}
