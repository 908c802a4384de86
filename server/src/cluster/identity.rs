//! The SWIM identity of a node and foca's packet codec, in the evolvable field format of
//! [`super::wire`] (adding a field to the identity later does not break running nodes).
//!
//! Identity = actor id + advertised gossip address + `bump` (wall-clock milliseconds at
//! start, +1 on each renewal): two identities with the same address are the same member, and
//! the higher bump — the newer incarnation of the process — wins.

use super::wire::{DResult, DecodeError, Field, Reader, Writer};
use crate::crdt::ActorId;
use bytes::{Buf, BufMut};
use foca::{Header, Identity, Member, Message, State};
use std::net::SocketAddr;

/// Largest encoded header or member accepted.
const MAX_ITEM: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Actor {
    pub id: ActorId,
    pub addr: SocketAddr,
    pub bump: u64,
}

impl Identity for Actor {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Actor {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.bump, self.id) > (adversary.bump, adversary.id)
    }
}

/// Bumps closer than this (ms) are renewals of one process, not a restart: a process starts
/// with its start time in milliseconds as its bump and each renewal adds 1.
const RESTART_BUMP_GAP: u64 = 1000;

/// Whether `new`, a member that just came up at an address where `old` was known, is a
/// different process: another actor, or the same actor restarted (a much larger bump). A
/// renewal after a partition is not: connections to that process are still good.
pub fn is_new_process(old: Option<&Actor>, new: &Actor) -> bool {
    match old {
        None => true,
        Some(o) => o.id != new.id || new.bump.saturating_sub(o.bump) >= RESTART_BUMP_GAP,
    }
}

fn put_actor(w: &mut Writer, tag: u32, a: &Actor) {
    w.msg(tag, |m| {
        m.bytes(1, &a.id.0)
            .str(2, &a.addr.to_string())
            .u64(3, a.bump);
    });
}

fn get_actor(f: Field<'_>) -> DResult<Actor> {
    let mut r = f.reader("identity")?;
    let (mut id, mut addr, mut bump) = (None, None, 0);
    while let Some((t, f)) = r.next_field()? {
        match t {
            1 => {
                id = Some(
                    ActorId::from_slice(f.bytes("actor id")?)
                        .ok_or(DecodeError::Invalid("actor id"))?,
                )
            }
            2 => {
                addr = Some(
                    f.str("address", 64)?
                        .parse()
                        .map_err(|_| DecodeError::Invalid("address"))?,
                )
            }
            3 => bump = f.u64("bump")?,
            _ => {}
        }
    }
    Ok(Actor {
        id: id.ok_or(DecodeError::Missing("actor id"))?,
        addr: addr.ok_or(DecodeError::Missing("address"))?,
        bump,
    })
}

/// Writes `varint(len) + body` so the decoder can take exactly one item from the packet.
fn put_item(buf: &mut impl BufMut, body: &[u8]) -> DResult<()> {
    let mut len = Vec::with_capacity(3);
    super::wire::put_varint(&mut len, body.len() as u64);
    if buf.remaining_mut() < len.len() + body.len() {
        return Err(DecodeError::TooLarge("packet"));
    }
    buf.put_slice(&len);
    buf.put_slice(body);
    Ok(())
}

fn get_item(buf: &mut impl Buf) -> DResult<bytes::Bytes> {
    let mut len: u64 = 0;
    for i in 0..3 {
        if !buf.has_remaining() {
            return Err(DecodeError::Truncated);
        }
        let b = buf.get_u8();
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = len as usize;
            if len > MAX_ITEM {
                return Err(DecodeError::TooLarge("swim item"));
            }
            if len > buf.remaining() {
                return Err(DecodeError::Truncated);
            }
            return Ok(buf.copy_to_bytes(len));
        }
    }
    Err(DecodeError::TooLarge("swim item"))
}

fn kind(m: &Message<Actor>) -> u64 {
    match m {
        Message::Ping(_) => 0,
        Message::Ack(_) => 1,
        Message::PingReq { .. } => 2,
        Message::IndirectPing { .. } => 3,
        Message::IndirectAck { .. } => 4,
        Message::ForwardedAck { .. } => 5,
        Message::Announce => 6,
        Message::Feed => 7,
        Message::Gossip => 8,
        Message::Broadcast => 9,
        Message::TurnUndead => 10,
    }
}

/// foca's [`foca::Codec`] over the field format.
#[derive(Debug, Default, Clone, Copy)]
pub struct SwimCodec;

impl foca::Codec<Actor> for SwimCodec {
    type Error = DecodeError;

    fn encode_header(&mut self, h: &Header<Actor>, mut buf: impl BufMut) -> DResult<()> {
        let mut w = Writer::new();
        put_actor(&mut w, 1, &h.src);
        w.u64(2, u64::from(h.src_incarnation));
        put_actor(&mut w, 3, &h.dst);
        w.u64(4, kind(&h.message));
        match &h.message {
            Message::Ping(n) | Message::Ack(n) => {
                w.u64(5, u64::from(*n));
            }
            Message::PingReq {
                target: a,
                probe_number: n,
            }
            | Message::IndirectPing {
                origin: a,
                probe_number: n,
            }
            | Message::IndirectAck {
                target: a,
                probe_number: n,
            }
            | Message::ForwardedAck {
                origin: a,
                probe_number: n,
            } => {
                w.u64(5, u64::from(*n));
                put_actor(&mut w, 6, a);
            }
            _ => {}
        }
        put_item(&mut buf, &w.finish())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> DResult<Header<Actor>> {
        let item = get_item(&mut buf)?;
        let mut r = Reader::new(&item);
        let (mut src, mut inc, mut dst, mut k, mut n, mut other) = (None, 0, None, None, 0, None);
        while let Some((t, f)) = r.next_field()? {
            match t {
                1 => src = Some(get_actor(f)?),
                2 => inc = f.u16("incarnation")?,
                3 => dst = Some(get_actor(f)?),
                4 => k = Some(f.u64("message kind")?),
                5 => {
                    n = u8::try_from(f.u64("probe number")?)
                        .map_err(|_| DecodeError::Invalid("probe number"))?
                }
                6 => other = Some(get_actor(f)?),
                _ => {}
            }
        }
        let other = || other.clone().ok_or(DecodeError::Missing("probe target"));
        let message = match k.ok_or(DecodeError::Missing("message kind"))? {
            0 => Message::Ping(n),
            1 => Message::Ack(n),
            2 => Message::PingReq {
                target: other()?,
                probe_number: n,
            },
            3 => Message::IndirectPing {
                origin: other()?,
                probe_number: n,
            },
            4 => Message::IndirectAck {
                target: other()?,
                probe_number: n,
            },
            5 => Message::ForwardedAck {
                origin: other()?,
                probe_number: n,
            },
            6 => Message::Announce,
            7 => Message::Feed,
            8 => Message::Gossip,
            9 => Message::Broadcast,
            10 => Message::TurnUndead,
            _ => return Err(DecodeError::Invalid("message kind")),
        };
        Ok(Header {
            src: src.ok_or(DecodeError::Missing("source"))?,
            src_incarnation: inc,
            dst: dst.ok_or(DecodeError::Missing("destination"))?,
            message,
        })
    }

    fn encode_member(&mut self, m: &Member<Actor>, mut buf: impl BufMut) -> DResult<()> {
        let mut w = Writer::new();
        put_actor(&mut w, 1, m.id());
        w.u64(2, u64::from(m.incarnation()));
        w.u64(
            3,
            match m.state() {
                State::Alive => 0,
                State::Suspect => 1,
                State::Down => 2,
            },
        );
        put_item(&mut buf, &w.finish())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> DResult<Member<Actor>> {
        let item = get_item(&mut buf)?;
        let mut r = Reader::new(&item);
        let (mut id, mut inc, mut state) = (None, 0, None);
        while let Some((t, f)) = r.next_field()? {
            match t {
                1 => id = Some(get_actor(f)?),
                2 => inc = f.u16("incarnation")?,
                3 => {
                    state = Some(match f.u64("state")? {
                        0 => State::Alive,
                        1 => State::Suspect,
                        2 => State::Down,
                        _ => return Err(DecodeError::Invalid("member state")),
                    })
                }
                _ => {}
            }
        }
        Ok(Member::new(
            id.ok_or(DecodeError::Missing("member"))?,
            inc,
            state.ok_or(DecodeError::Missing("member state"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Codec;
    use proptest::prelude::*;

    fn actor(n: u8) -> Actor {
        Actor {
            id: ActorId([n; 16]),
            addr: format!("127.0.0.1:{}", 4000 + u16::from(n))
                .parse()
                .unwrap(),
            bump: 1_700_000_000_000 + u64::from(n),
        }
    }

    #[test]
    fn headers_and_members_round_trip() {
        let msgs = vec![
            Message::Ping(3),
            Message::Ack(4),
            Message::PingReq {
                target: actor(3),
                probe_number: 9,
            },
            Message::ForwardedAck {
                origin: actor(4),
                probe_number: 1,
            },
            Message::Announce,
            Message::TurnUndead,
        ];
        for message in msgs {
            let h = Header {
                src: actor(1),
                src_incarnation: 7,
                dst: actor(2),
                message,
            };
            let mut buf = Vec::new();
            SwimCodec.encode_header(&h, &mut buf).unwrap();
            let m = Member::new(actor(5), 2, State::Suspect);
            SwimCodec.encode_member(&m, &mut buf).unwrap();
            let mut slice = &buf[..];
            assert_eq!(SwimCodec.decode_header(&mut slice).unwrap(), h);
            assert_eq!(SwimCodec.decode_member(&mut slice).unwrap(), m);
            assert!(slice.is_empty(), "each decoder consumes exactly one item");
        }
    }

    #[test]
    fn only_another_actor_or_a_restart_is_a_new_process() {
        let a = Actor {
            id: ActorId([1; 16]),
            addr: "127.0.0.1:1".parse().unwrap(),
            bump: 1_700_000_000_000,
        };
        assert!(is_new_process(None, &a));
        assert!(!is_new_process(Some(&a), &a));
        // Renewals after partitions: same process.
        let renewed = a.renew().unwrap().renew().unwrap();
        assert!(!is_new_process(Some(&a), &renewed));
        // Restarted two seconds later, or another node now at that address.
        let restarted = Actor {
            bump: a.bump + 2_000,
            ..a.clone()
        };
        assert!(is_new_process(Some(&a), &restarted));
        let other = Actor {
            id: ActorId([2; 16]),
            ..a.clone()
        };
        assert!(is_new_process(Some(&a), &other));
    }

    #[test]
    fn newer_bump_wins_and_renew_wins() {
        let old = actor(1);
        let new = old.renew().unwrap();
        assert!(new.win_addr_conflict(&old) && !old.win_addr_conflict(&new));
        assert_eq!(new.addr(), old.addr());
    }

    #[test]
    fn encoding_into_a_full_buffer_fails_without_writing() {
        let h = Header {
            src: actor(1),
            src_incarnation: 0,
            dst: actor(2),
            message: Message::Ping(1),
        };
        let mut small = [0u8; 10];
        let mut slice = &mut small[..];
        assert!(SwimCodec.encode_header(&h, &mut slice).is_err());
        assert_eq!(small, [0u8; 10]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut s = &bytes[..];
            let _ = SwimCodec.decode_header(&mut s);
            let mut s = &bytes[..];
            let _ = SwimCodec.decode_member(&mut s);
        }
    }
}
