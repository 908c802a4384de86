//! The node processes of `verdigris dev`: real `verdigris agent` children of this binary, one
//! directory each, in their own process group (Ctrl-C reaches only the dev process, which
//! stops them in order) and with a parent-death signal (if the dev process is killed, even by
//! SIGKILL, the kernel sends each node SIGTERM).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running node.
pub struct NodeProc {
    pub name: String,
    pub api: SocketAddr,
    pub gossip: SocketAddr,
    pub log: PathBuf,
    child: Child,
    /// Set once the process has been reaped.
    exited: Option<ExitStatus>,
}

/// The config of node `dir`, joining `bootstrap`.
fn config_text(dir: &Path, schema: &Path, bootstrap: &[SocketAddr]) -> String {
    let boot: Vec<String> = bootstrap.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "# Written by `verdigris dev`.\n\
         [db]\npath = {db:?}\nschema_paths = [{schema:?}]\n\n\
         [api]\naddr = \"127.0.0.1:0\"\n\n\
         [gossip]\naddr = \"127.0.0.1:0\"\nbootstrap = [{boot}]\nplaintext = true\n\n\
         [admin]\npath = {admin:?}\n\n\
         [perf]\nmin_sync_backoff = 1\nmax_sync_backoff = 5\n",
        db = dir.join("state.db").display().to_string(),
        schema = schema.display().to_string(),
        admin = dir.join("admin.sock").display().to_string(),
        boot = boot.join(", "),
    )
}

/// Whether an environment variable would override a node's config (`VERDIGRIS_X__Y`, or
/// Corrosion's unprefixed `DB__PATH` style).
fn overrides_config(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let sections = ["DB__", "API__", "GOSSIP__", "ADMIN__", "PERF__", "LOG__"];
    (upper.starts_with("VERDIGRIS_") && upper.contains("__"))
        || sections.iter().any(|s| upper.starts_with(s))
}

impl NodeProc {
    /// Starts node `name` in `dir` and waits until it prints its addresses.
    pub fn start(
        name: &str,
        dir: &Path,
        schema: &Path,
        bootstrap: &[SocketAddr],
    ) -> Result<NodeProc> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text(dir, schema, bootstrap))
            .with_context(|| format!("writing {}", config.display()))?;
        let log_path = dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let exe = std::env::current_exe().context("locating the verdigris binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("-c").arg(&config).arg("agent");
        for (k, _) in std::env::vars_os() {
            if overrides_config(&k.to_string_lossy()) {
                cmd.env_remove(&k);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone()?))
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the signal was armed: do not outlive it.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting a node")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Copies the node's stdout into its log once the startup lines are read; ends at EOF
        // (when the node exits).
        let mut log_out = log;
        std::thread::Builder::new()
            .name(format!("vd-dev-{name}"))
            .spawn(move || {
                let mut ready = false;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    // The log is best effort: a failed write loses a line of it, nothing else.
                    let _ = writeln!(log_out, "{line}");
                    if !ready {
                        ready = line.trim_start().starts_with("admin socket:");
                        if tx.send(line).is_err() {
                            ready = true;
                        }
                    }
                }
            })?;
        let (mut api, mut gossip) = (None, None);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut node = NodeProc {
            name: name.to_string(),
            api: "0.0.0.0:0".parse().expect("addr"),
            gossip: "0.0.0.0:0".parse().expect("addr"),
            log: log_path,
            child,
            exited: None,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let line = line.trim();
                    if let Some(a) = line.strip_prefix("api: http://") {
                        api = a.parse().ok();
                    } else if let Some(g) = line.strip_prefix("gossip: ") {
                        gossip = g.parse().ok();
                    } else if line.starts_with("admin socket:") {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                    if let Some(status) = node.child.try_wait()? {
                        node.exited = Some(status);
                        bail!(
                            "{name} exited ({status}) while starting; see {}",
                            node.log.display()
                        );
                    }
                }
                Err(_) => {
                    node.stop();
                    bail!(
                        "{name} did not start within {START_TIMEOUT:?}; see {}",
                        node.log.display()
                    );
                }
            }
        }
        match (api, gossip) {
            (Some(a), Some(g)) => {
                node.api = a;
                node.gossip = g;
                Ok(node)
            }
            _ => {
                node.stop();
                bail!(
                    "{name} did not print its addresses; see {}",
                    node.log.display()
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the node ended (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Sends SIGTERM (the node shuts down gracefully).
    pub fn terminate(&mut self) {
        if self.exited().is_none() {
            // SAFETY: plain kill(2) on our own child, which is not reaped yet.
            let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            if r != 0 {
                tracing::warn!(node = %self.name, error = %std::io::Error::last_os_error(), "SIGTERM failed");
            }
        }
    }

    /// Waits up to [`STOP_TIMEOUT`] for the node to exit after [`NodeProc::terminate`], then
    /// kills it. Returns its exit status.
    pub fn wait_or_kill(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(node = %self.name, "did not stop within {STOP_TIMEOUT:?}; killing it");
        if let Err(e) = self.child.kill() {
            tracing::warn!(node = %self.name, error = %e, "kill failed");
        }
        self.exited = self.child.wait().ok();
        self.exited
    }

    /// SIGTERM, then wait (and kill if needed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.terminate();
        self.wait_or_kill()
    }
}

impl Drop for NodeProc {
    /// No node outlives the dev process, even on an error path.
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_overrides_are_recognized() {
        assert!(overrides_config("VERDIGRIS_API__ADDR"));
        assert!(overrides_config("gossip__bootstrap"));
        assert!(!overrides_config("VERDIGRIS_LOG"));
        assert!(!overrides_config("RUST_LOG"));
        assert!(!overrides_config("PATH"));
    }

    #[test]
    fn node_config_parses() {
        let dir = Path::new("/tmp/x/node-1");
        let text = config_text(
            dir,
            Path::new("/tmp/x/schema"),
            &["127.0.0.1:9".parse().unwrap()],
        );
        let (c, warnings) =
            crate::config::Config::from_toml_str(&text, std::iter::empty()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.db.path, dir.join("state.db"));
        assert_eq!(c.gossip.bootstrap, ["127.0.0.1:9"]);
        assert!(c.gossip.plaintext);
    }
}
