//! The cluster: membership (SWIM via foca), the QUIC transport, broadcast of new changes and
//! anti-entropy sync.

pub mod chunker;
pub mod codec;
pub mod sync_state;
pub mod wire;
