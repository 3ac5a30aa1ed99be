//! Request bodies: the [`Json`] extractor, whose refusals name the field
//! and what it expects; integer fields as JSON Schema reads them (`5` and
//! `5.0` are the same integer, so both are accepted; `5.5`, strings and
//! out-of-range numbers are refused, 422 `invalid_body`); times in RFC 3339.

use crate::error::{ApiError, ErrorCode};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Number;

/// A JSON request body of type `T`. Media type, size and syntax are
/// checked as `web::Json` does (its `JsonConfig` answers those); a body
/// that is JSON but not a `T` is 422 `invalid_body` with a message that
/// starts with the field's path (`items[0].quantity: ...`), not a line and
/// column.
pub struct Json<T>(pub T);

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let raw = web::Json::<Box<RawValue>>::from_request(req, payload);
        Box::pin(async move {
            let raw = raw.await?.into_inner();
            parse(raw.get()).map(Json).map_err(Into::into)
        })
    }
}

/// `text` as a `T`; the path-tracking parse runs only to explain a refusal.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|_| {
        let mut de = serde_json::Deserializer::from_str(text);
        let why = match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) => describe(&e.path().to_string(), e.inner()),
            // Cannot happen (the same text, the same type); say something true.
            Ok(_) => "the body does not match the expected shape".to_owned(),
        };
        ApiError::new(ErrorCode::InvalidBody, format!("invalid body: {why}"))
    })
}

/// `field: what was wrong`, without serde_json's line and column (a body
/// is one line for most clients, so they point nowhere useful).
fn describe(path: &str, err: &serde_json::Error) -> String {
    let text = err.to_string();
    let what = match text.rfind(" at line ") {
        Some(at) if err.line() > 0 => &text[..at],
        _ => text.as_str(),
    };
    if path == "." || path.is_empty() {
        what.to_owned()
    } else {
        format!("{path}: {what}")
    }
}

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

/// Says "integer" where serde_json says "JSON number" (`"5"` for a count).
fn integer_wanted<E: serde::de::Error>(e: E) -> E {
    E::custom(e.to_string().replace("a JSON number", "an integer"))
}

/// A required integer.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    number(Number::deserialize(d).map_err(integer_wanted)?)
}

/// An optional integer (`null` or absent: none); use with `#[serde(default)]`.
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<Number>::deserialize(d)
        .map_err(integer_wanted)?
        .map(number)
        .transpose()
}

/// An integer that may be left out but, when given, is not `null`; use
/// with `#[serde(default)]`.
pub fn present_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    number(Number::deserialize(d).map_err(integer_wanted)?).map(Some)
}

/// A string that may be left out but, when given, is not `null`; use with
/// `#[serde(default)]`.
pub fn present_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// An RFC 3339 time (`2026-12-24T10:00:00Z`), with a message that says so.
pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<chrono::DateTime<chrono::Utc>, D::Error> {
    let text = String::deserialize(d)?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "expected an RFC 3339 time such as 2026-12-24T10:00:00Z, got {text:?}"
            ))
        })
}

/// An optional RFC 3339 time (`null` or absent: none); use with
/// `#[serde(default)]`.
pub fn opt_time<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "time")] chrono::DateTime<chrono::Utc>);
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
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

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<T>,
        #[serde(deserialize_with = "time")]
        at: chrono::DateTime<chrono::Utc>,
        #[serde(default, deserialize_with = "opt_time")]
        until: Option<chrono::DateTime<chrono::Utc>>,
    }

    fn refusal(text: &str) -> String {
        let e = parse::<Outer>(text).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidBody);
        e.message
    }

    #[test]
    fn refusals_name_the_field_and_what_it_expects() {
        let ok = r#"{"items": [{"a": 1}], "at": "2026-12-24T10:00:00Z", "until": null}"#;
        let parsed = parse::<Outer>(ok).unwrap();
        assert_eq!(parsed.until, None);
        let m = refusal(r#"{"items": [{"a": 1}], "at": "2026-12-24"}"#);
        assert!(
            m.starts_with("invalid body: at: expected an RFC 3339 time"),
            "{m}"
        );
        assert!(!m.contains("line"), "{m}");
        let m = refusal(r#"{"items": [{"a": 1}, {"a": "x"}], "at": "2026-12-24T10:00:00Z"}"#);
        assert!(m.starts_with("invalid body: items[1].a: "), "{m}");
        assert!(m.contains("expected an integer"), "{m}");
        let m = refusal(r#"{"items": [], "at": "2026-12-24T10:00:00Z", "until": "soon"}"#);
        assert!(
            m.starts_with("invalid body: until: expected an RFC 3339 time"),
            "{m}"
        );
        let m = refusal(r#"{"items": []}"#);
        assert!(m.contains("missing field `at`"), "{m}");
        let m = refusal(r#"{"items": [], "at": "2026-12-24T10:00:00Z", "x": 1}"#);
        assert!(m.contains("unknown field `x`"), "{m}");
    }
}
