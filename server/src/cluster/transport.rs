//! The QUIC transport: one quinn endpoint per node on `gossip.addr`, serving and dialing, and
//! one cached outgoing connection per peer (re-dialed when it fails).
//!
//! - datagrams carry SWIM packets;
//! - uni streams carry broadcast frames (`u32` BE length + envelope);
//! - bi streams carry sync sessions, with the same framing.
//!
//! Inbound traffic is handed to the cluster tasks through bounded channels; when one is full
//! the item is dropped and counted. Peers in [`Status::blocked`] are cut off both ways.

use super::codec::MAX_FRAME;
use super::status::{Counters, Status};
use crate::config::GossipConfig;
use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Most frames read from one broadcast stream.
const MAX_FRAMES_PER_STREAM: usize = 1024;

/// Inbound traffic, by kind.
pub struct Inbound {
    pub datagrams: mpsc::Sender<Bytes>,
    /// Broadcast frames (one envelope each) with the sender's address.
    pub frames: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    /// Sync sessions opened by peers.
    pub sessions: mpsc::Sender<(SocketAddr, SendStream, RecvStream)>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

pub struct Transport {
    endpoint: Endpoint,
    conns: Mutex<HashMap<SocketAddr, Slot>>,
    status: Arc<Status>,
    /// Whether the TLS server name must be the peer's IP (CA-verified mode).
    name_by_ip: bool,
}

fn transport_config(g: &GossipConfig) -> Result<Arc<quinn::TransportConfig>> {
    let mut t = quinn::TransportConfig::default();
    let idle = Duration::from_secs(u64::from(g.idle_timeout_secs.max(1)));
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(idle)?));
    t.keep_alive_interval(Some(idle / 2));
    t.max_concurrent_bidi_streams(32u32.into());
    t.max_concurrent_uni_streams(256u32.into());
    if let Some(mtu) = g.max_mtu {
        t.initial_mtu(mtu);
        t.min_mtu(mtu);
        t.mtu_discovery_config(None);
    }
    Ok(Arc::new(t))
}

impl Transport {
    /// Binds the endpoint and starts accepting connections.
    pub fn bind(g: &GossipConfig, status: Arc<Status>, inbound: Inbound) -> Result<Arc<Transport>> {
        let (mut server, mut client) = super::tls::endpoint_configs(g)?;
        let tc = transport_config(g)?;
        server.transport_config(tc.clone());
        client.transport_config(tc);
        let mut endpoint = Endpoint::server(server, g.addr).map_err(|e| {
            let fix = match e.kind() {
                std::io::ErrorKind::AddrInUse => "another process (another node?) uses that UDP port: stop it, or set gossip.addr to a free port",
                std::io::ErrorKind::AddrNotAvailable => "that IP is not an address of this host: set gossip.addr to one of its addresses (or 0.0.0.0 with gossip.external_addr)",
                std::io::ErrorKind::PermissionDenied => "ports below 1024 need privileges: set gossip.addr to a port above 1024",
                _ => "check gossip.addr",
            };
            anyhow!("cannot bind gossip.addr {}: {e}; {fix}", g.addr)
        })?;
        endpoint.set_default_client_config(client);
        let local = endpoint.local_addr()?;
        let _ = status.gossip_addr.set(local);
        let t = Arc::new(Transport {
            endpoint,
            conns: Mutex::new(HashMap::new()),
            status,
            name_by_ip: super::tls::verifies_servers(g),
        });
        tokio::spawn(accept_loop(t.clone(), Arc::new(inbound)));
        Ok(t)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound endpoint")
    }

    /// The cached connection to `addr`, dialing it if needed.
    pub async fn connection(&self, addr: SocketAddr) -> Result<Connection> {
        if self.status.is_blocked(&addr) {
            bail!("{addr} is partitioned away");
        }
        let slot = self
            .conns
            .lock()
            .expect("conns lock")
            .entry(addr)
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        *guard = None;
        let name = if self.name_by_ip {
            addr.ip().to_string()
        } else {
            "localhost".to_string()
        };
        let connecting = self.endpoint.connect(addr, &name)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))??;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the cached connection to `addr` (its process may have restarted: a connection
    /// to the old process would swallow sends until it times out). The next send re-dials.
    pub fn forget(&self, addr: &SocketAddr) {
        self.conns.lock().expect("conns lock").remove(addr);
    }

    /// Closes the cached connection to `addr` (its member was declared down or replaced by a
    /// new process): sends and sync sessions riding it fail at once instead of waiting for
    /// the idle timeout. The next use re-dials.
    pub fn close_peer(&self, addr: &SocketAddr, why: &'static str) {
        let slot = self.conns.lock().expect("conns lock").remove(addr);
        // A slot being dialed is locked; dropping it from the map is enough then.
        if let Some(conn) = slot.and_then(|s| s.try_lock().ok().and_then(|g| g.clone())) {
            conn.close(0u32.into(), why.as_bytes());
        }
    }

    /// Smoothed RTT of the cached connection to `addr`, if one is open.
    pub fn rtt(&self, addr: &SocketAddr) -> Option<Duration> {
        let slot = self.conns.lock().expect("conns lock").get(addr).cloned()?;
        let guard = slot.try_lock().ok()?;
        guard
            .as_ref()
            .filter(|c| c.close_reason().is_none())
            .map(|c| c.rtt())
    }

    /// Sends one datagram (lossy; a failed send drops the cached connection).
    pub async fn send_datagram(&self, addr: SocketAddr, data: Bytes) -> Result<()> {
        let conn = self.connection(addr).await?;
        let len = data.len();
        if let Err(e) = conn.send_datagram(data) {
            conn.close(0u32.into(), b"datagram failed");
            return Err(e.into());
        }
        Counters::add(&self.status.counters.gossip_bytes_out, len);
        Ok(())
    }

    /// Sends frames on a new uni stream and waits for the peer to have read them.
    pub async fn send_frames(&self, addr: SocketAddr, frames: &[Bytes]) -> Result<()> {
        let conn = self.connection(addr).await?;
        let send = async {
            let mut s = conn.open_uni().await?;
            for f in frames {
                write_frame(&mut s, f).await?;
                Counters::add(&self.status.counters.gossip_bytes_out, f.len());
            }
            s.finish()?;
            let _ = s.stopped().await;
            anyhow::Ok(())
        };
        tokio::time::timeout(SEND_TIMEOUT, send)
            .await
            .map_err(|_| anyhow!("sending to {addr} timed out"))?
    }

    /// Opens a bi stream (a sync session) to `addr`.
    pub async fn open_bi(&self, addr: SocketAddr) -> Result<(SendStream, RecvStream)> {
        let conn = self.connection(addr).await?;
        Ok(tokio::time::timeout(CONNECT_TIMEOUT, conn.open_bi())
            .await
            .map_err(|_| anyhow!("opening a stream to {addr} timed out"))??)
    }

    /// Stops the endpoint, letting peers know.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Writes one length-prefixed frame.
pub async fn write_frame(s: &mut SendStream, data: &[u8]) -> Result<()> {
    s.write_all(&(data.len() as u32).to_be_bytes()).await?;
    s.write_all(data).await?;
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream. Frames over [`MAX_FRAME`] are an error.
pub async fn read_frame(s: &mut RecvStream) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        bail!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit");
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

async fn accept_loop(t: Arc<Transport>, inbound: Arc<Inbound>) {
    while let Some(incoming) = t.endpoint.accept().await {
        if t.status.is_blocked(&incoming.remote_address()) {
            incoming.refuse();
            continue;
        }
        let (t, inbound) = (t.clone(), inbound.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => serve_connection(t, inbound, conn).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "incoming connection failed"),
                Err(_) => tracing::debug!("incoming handshake timed out"),
            }
        });
    }
}

async fn serve_connection(t: Arc<Transport>, inbound: Arc<Inbound>, conn: Connection) {
    let peer = conn.remote_address();
    let status = &t.status;
    loop {
        tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) if !status.is_blocked(&peer) => {
                    Counters::add(&status.counters.gossip_bytes_in, d.len());
                    if inbound.datagrams.try_send(d).is_err() {
                        Counters::bump(&status.counters.inbound_dropped);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            },
            s = conn.accept_uni() => match s {
                Ok(s) if !status.is_blocked(&peer) => {
                    tokio::spawn(read_broadcasts(status.clone(), inbound.clone(), peer, s));
                }
                Ok(mut s) => { let _ = s.stop(0u32.into()); }
                Err(_) => break,
            },
            b = conn.accept_bi() => match b {
                Ok((send, recv)) if !status.is_blocked(&peer) => {
                    if inbound.sessions.try_send((peer, send, recv)).is_err() {
                        Counters::bump(&status.counters.inbound_dropped);
                    }
                }
                Ok((_, mut recv)) => { let _ = recv.stop(0u32.into()); }
                Err(_) => break,
            },
        }
    }
}

async fn read_broadcasts(
    status: Arc<Status>,
    inbound: Arc<Inbound>,
    peer: SocketAddr,
    mut s: RecvStream,
) {
    for _ in 0..MAX_FRAMES_PER_STREAM {
        match tokio::time::timeout(SEND_TIMEOUT, read_frame(&mut s)).await {
            Ok(Ok(Some(frame))) => {
                Counters::add(&status.counters.gossip_bytes_in, frame.len());
                if inbound.frames.try_send((peer, frame)).is_err() {
                    Counters::bump(&status.counters.inbound_dropped);
                }
            }
            Ok(Ok(None)) => return,
            Ok(Err(_)) | Err(_) => {
                Counters::bump(&status.counters.malformed);
                let _ = s.stop(1u32.into());
                return;
            }
        }
    }
    let _ = s.stop(0u32.into());
}
