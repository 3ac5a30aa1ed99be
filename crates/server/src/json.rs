//! Integer fields of request bodies as JSON Schema reads them: `5` and
//! `5.0` are the same integer (an integral number), so both are accepted;
//! `5.5`, strings and out-of-range numbers are refused (422 `invalid_body`).

use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// 2^63 as a float: integral floats below it (and at or above -2^63) fit.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

pub fn to_i64(n: &Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= -I64_BOUND && *f < I64_BOUND)
            // Exact: the value is integral and within range.
            .map(|f| f as i64)
    })
}

fn number<E: serde::de::Error>(n: Number) -> Result<i64, E> {
    to_i64(&n).ok_or_else(|| E::custom(format!("invalid type: {n}, expected an integer")))
}

/// A required integer.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    number(Number::deserialize(d)?)
}

/// An optional integer (`null` or absent: none); use with `#[serde(default)]`.
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<Number>::deserialize(d)?.map(number).transpose()
}

/// An integer that may be left out but, when given, is not `null`; use
/// with `#[serde(default)]`.
pub fn present_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    number(Number::deserialize(d)?).map(Some)
}

/// A string that may be left out but, when given, is not `null`; use with
/// `#[serde(default)]`.
pub fn present_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(deserialize_with = "int")]
        a: i64,
        #[serde(default, deserialize_with = "present_int")]
        b: Option<i64>,
    }

    #[test]
    fn integral_numbers_only() {
        let t: T = serde_json::from_str(r#"{"a": 5.0}"#).unwrap();
        assert_eq!((t.a, t.b), (5, None));
        assert!(serde_json::from_str::<T>(r#"{"a": 5.5}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": "5"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": 1e19}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": 1, "b": null}"#).is_err());
        let t: T = serde_json::from_str(r#"{"a": 1, "b": 2.0}"#).unwrap();
        assert_eq!(t.b, Some(2));
    }
}
