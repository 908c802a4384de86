//! The replicated-data core: pure logic with no I/O.
//!
//! - [`value`]: the total order on SQLite values used to break ties.
//! - [`pack`]: the packed primary-key format (cr-sqlite's `pack_columns`).
//! - [`clock`]: the per-row clock (causal length + per-cell versions) and its byte encoding.
//! - [`merge`]: the merge rules, written as pure functions over clocks.
//! - [`hlc`]: a hybrid logical clock for transaction timestamps.
//!
//! Everything here is deterministic and exhaustively testable; `store` does the SQLite I/O.

pub mod clock;
pub mod hlc;
pub mod merge;
/// The packed primary-key format, shared with the subscription engine.
pub use verdigris_subscriptions::pack;
pub mod value;

use std::fmt;

/// A node's 16-byte identity (cr-sqlite "site id", Corrosion "actor id").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ActorId(pub [u8; 16]);

impl ActorId {
    /// A fresh random (version 4 UUID layout) actor id.
    pub fn random() -> Self {
        let mut b: [u8; 16] = rand::random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        ActorId(b)
    }

    pub fn from_slice(s: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(s).ok().map(ActorId)
    }

    /// Parses 32 hex characters, with or without UUID hyphens.
    pub fn parse(s: &str) -> Option<Self> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ActorId(out))
    }

    /// Hyphenated lowercase UUID form (used by admin commands and JSON).
    pub fn hyphenated(&self) -> String {
        let s = self.to_string();
        format!(
            "{}-{}-{}-{}-{}",
            &s[0..8],
            &s[8..12],
            &s[12..16],
            &s[16..20],
            &s[20..32]
        )
    }
}

/// Display is the 32-hex-character "simple" form, as in Corrosion's `actor_id` fields.
impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_id_text_forms_round_trip() {
        let a = ActorId::random();
        assert_eq!(ActorId::parse(&a.to_string()), Some(a));
        assert_eq!(ActorId::parse(&a.hyphenated()), Some(a));
        assert_eq!(a.to_string().len(), 32);
        assert_eq!(ActorId::parse("xyz"), None);
    }
}
