//! `verdigris cluster …` (through the admin socket) and `verdigris tls … generate`.

use crate::config::Config;
use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// List members with their state and round-trip time.
    Members,
    /// foca's view of every member: identity (actor, address, bump), incarnation, state.
    MembershipStates,
    /// Renew this node's SWIM identity and announce it to the seeds and known members.
    Rejoin,
    /// Counters of rejected and dropped peer input, gaps and queue length.
    Stats,
    /// Fault injection: drop all gossip traffic to and from these peers (`ip:port`).
    Partition { peers: Vec<String> },
    /// Lift every partition set with `cluster partition`.
    Heal,
}

#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// The certificate authority.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// A server certificate (one per node, for its gossip IP).
    Server {
        #[command(subcommand)]
        cmd: LeafCmd,
    },
    /// A client certificate (for mutual TLS).
    Client {
        #[command(subcommand)]
        cmd: LeafCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Write ca_cert.pem and ca_key.pem.
    Generate {
        #[arg(long, default_value = ".")]
        output_path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeafCmd {
    /// Write <kind>_cert.pem and <kind>_key.pem signed by the CA.
    Generate {
        /// The node's gossip IP (server certificates only).
        ip: Option<String>,
        /// The CA key written by `tls ca generate`.
        #[arg(long)]
        ca_key: PathBuf,
        /// The CA certificate (accepted for compatibility; the key is what signs).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        #[arg(long, default_value = ".")]
        output_path: PathBuf,
    },
}

pub async fn cluster(config: &Config, cmd: ClusterCmd) -> Result<()> {
    let req = match &cmd {
        ClusterCmd::Members => json!({"Cluster": "Members"}),
        ClusterCmd::MembershipStates => json!({"Cluster": "MembershipStates"}),
        ClusterCmd::Rejoin => json!({"Cluster": "Rejoin"}),
        ClusterCmd::Stats => json!({"Cluster": "Stats"}),
        ClusterCmd::Heal => json!({"Cluster": "Heal"}),
        ClusterCmd::Partition { peers } => json!({"Cluster": {"Partition": peers}}),
    };
    let replies = crate::admin::request(&config.admin.path, req).await?;
    for r in replies {
        let v = r.get("Json").cloned().unwrap_or(r);
        match (&cmd, &v) {
            (ClusterCmd::Members, Value::Array(ms)) => {
                println!("{:<34} {:<22} {:<8} RTT", "ACTOR", "ADDRESS", "STATE");
                for m in ms {
                    let rtt = m["rtt_ms"]
                        .as_f64()
                        .map_or("-".to_string(), |r| format!("{r:.2} ms"));
                    println!(
                        "{:<34} {:<22} {:<8} {}",
                        m["actor_id"].as_str().unwrap_or(""),
                        m["address"].as_str().unwrap_or(""),
                        m["state"].as_str().unwrap_or(""),
                        rtt
                    );
                }
            }
            _ => println!("{}", serde_json::to_string_pretty(&v)?),
        }
    }
    Ok(())
}

pub fn tls(cmd: TlsCmd) -> Result<()> {
    use super::tls::{generate_ca, generate_leaf};
    match cmd {
        TlsCmd::Ca {
            cmd: CaCmd::Generate { output_path },
        } => generate_ca(&output_path),
        TlsCmd::Server {
            cmd:
                LeafCmd::Generate {
                    ip,
                    ca_key,
                    output_path,
                    ..
                },
        } => {
            let Some(ip) = ip else {
                anyhow::bail!("`tls server generate` needs the node's gossip IP");
            };
            if ip.parse::<std::net::IpAddr>().is_err() {
                anyhow::bail!("{ip:?} is not an IP address (peers verify servers by IP)");
            }
            generate_leaf(&ca_key, &output_path, Some(&ip))
        }
        TlsCmd::Client {
            cmd:
                LeafCmd::Generate {
                    ca_key,
                    output_path,
                    ..
                },
        } => generate_leaf(&ca_key, &output_path, None),
    }
}
