//! Rooms and tokens, parsed once at the edge.
//!
//! A room (`Target`) is the whole store or one coupon or sale, so a flash
//! coupon can queue its own crowd without blocking the rest of the shop. Only
//! these kinds exist: a free-form name would let one user create unbounded
//! rooms for the admitter to walk.
//!
//! A token names its room (`store.<hex>`, `coupon-42.<hex>`), so a poll finds
//! the room's keys without a lookup: one Redis round trip.

use std::fmt;

/// Hex digits of a token's random part (128 bits).
const TOKEN_HEX: usize = 32;

/// A waiting room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The whole store: the default room.
    Store,
    /// One coupon's room (`coupon:42`).
    Coupon(i64),
    /// One sale's room (`sale:7`).
    Sale(i64),
}

/// Why a room name or a token could not be read. Its own type, so that
/// this module needs nothing of the crate's error type, which takes it in
/// with `From` (`invalid_queue_target`, `invalid_queue_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadTarget {
    /// Not `store`, `coupon:<id>` or `sale:<id>` (the first 64 characters).
    Room(String),
    /// Not a token this service hands out.
    Token,
}

impl Target {
    /// Parses `store`, `coupon:<id>` or `sale:<id>` (ids positive).
    pub fn parse(raw: &str) -> Result<Self, BadTarget> {
        let invalid = || BadTarget::Room(raw.chars().take(64).collect());
        match raw.split_once(':') {
            None if raw == "store" => Ok(Self::Store),
            Some((kind, id)) => {
                // Digits only (`parse` would take a `+`); ids are positive i64.
                let id = Some(id)
                    .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|d| d.parse::<u64>().ok())
                    .and_then(|n| i64::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(invalid)?;
                match kind {
                    "coupon" => Ok(Self::Coupon(id)),
                    "sale" => Ok(Self::Sale(id)),
                    _ => Err(invalid()),
                }
            }
            None => Err(invalid()),
        }
    }

    /// The room's form inside tokens: `:` becomes `-` (path-friendly).
    fn token_part(self) -> String {
        match self {
            Self::Store => "store".to_owned(),
            Self::Coupon(id) => format!("coupon-{id}"),
            Self::Sale(id) => format!("sale-{id}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store => f.write_str("store"),
            Self::Coupon(id) => write!(f, "coupon:{id}"),
            Self::Sale(id) => write!(f, "sale:{id}"),
        }
    }
}

/// Builds a token for `target` from 128 random (or hashed) bits.
pub(crate) fn make_token(target: Target, bits: u128) -> String {
    format!("{}.{bits:032x}", target.token_part())
}

/// Splits a token into its room; anything malformed is `InvalidToken`.
pub fn token_target(token: &str) -> Result<Target, BadTarget> {
    let (room, random) = token.rsplit_once('.').ok_or(BadTarget::Token)?;
    if random.len() != TOKEN_HEX
        || !random
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(BadTarget::Token);
    }
    // Only the canonical form: `coupon:1.<hex>` would parse, but is not ours.
    if room.contains(':') {
        return Err(BadTarget::Token);
    }
    let room = match room.split_once('-') {
        Some((kind, id)) => format!("{kind}:{id}"),
        None => room.to_owned(),
    };
    Target::parse(&room).map_err(|_| BadTarget::Token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        assert_eq!(Target::parse("store").unwrap(), Target::Store);
        assert_eq!(Target::parse("coupon:42").unwrap(), Target::Coupon(42));
        assert_eq!(Target::parse("sale:7").unwrap(), Target::Sale(7));
        for t in [Target::Store, Target::Coupon(42), Target::Sale(7)] {
            assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
        }
        for bad in [
            "",
            "Store",
            "coupon",
            "coupon:",
            "coupon:0",
            "coupon:-1",
            "coupon:+1",
            "coupon: 1",
            "coupon:1:2",
            "thing:1",
            "coupon:99999999999999999999",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tokens_name_their_room() {
        for t in [Target::Store, Target::Coupon(42), Target::Sale(9)] {
            let tok = make_token(t, 0xdead_beef);
            assert_eq!(token_target(&tok).unwrap(), t, "{tok}");
        }
        assert_eq!(
            make_token(Target::Coupon(42), 1),
            "coupon-42.00000000000000000000000000000001"
        );
        for bad in [
            "",
            "garbage",
            "store.",
            "store.123",
            "store.0000000000000000000000000000000G",
            "store.0000000000000000000000000000000A",
            "nope.00000000000000000000000000000001",
            "coupon-0.00000000000000000000000000000001",
            "coupon:1.00000000000000000000000000000001",
        ] {
            assert!(token_target(bad).is_err(), "{bad:?} accepted");
        }
    }
}
