//! Picking up to two named fields of a JSON object in one pass: keys are borrowed from the input
//! when they hold no escapes, the fields not asked for are skipped without being built, and the
//! ones asked for are kept only as numbers. The last occurrence of a repeated key wins, as when
//! the whole value is built. `None` for anything that is not one well-formed JSON object.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A picked field: a number as JSON has it, or something else.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    I(i64),
    U(u64),
    F(f64),
    Other,
}

impl Num {
    /// As a whole number of milliseconds (what `serde_json::Value::as_i64` accepts).
    pub(crate) fn as_i64(self) -> Option<i64> {
        match self {
            Num::I(i) => Some(i),
            Num::U(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// As a finite float (what `serde_json::Value::as_f64` accepts, finite).
    pub(crate) fn as_f64(self) -> Option<f64> {
        let f = match self {
            Num::I(i) => i as f64,
            Num::U(u) => u as f64,
            Num::F(f) => f,
            Num::Other => return None,
        };
        f.is_finite().then_some(f)
    }
}

/// The fields `first` and `second` of the object in `bytes` (each `None` if not asked or absent).
pub(crate) fn pick(
    bytes: &[u8],
    first: Option<&str>,
    second: Option<&str>,
) -> Option<(Option<Num>, Option<Num>)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let picked = Picker { first, second }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(picked)
}

struct Picker<'n> {
    first: Option<&'n str>,
    second: Option<&'n str>,
}

impl<'de> DeserializeSeed<'de> for Picker<'_> {
    type Value = (Option<Num>, Option<Num>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Picker<'_> {
    type Value = (Option<Num>, Option<Num>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut a, mut b) = (None, None);
        while let Some(k) = map.next_key::<Key<'de>>()? {
            let k = k.as_str();
            if Some(k) == self.first {
                let n = map.next_value::<Num>()?;
                if self.second == self.first {
                    b = Some(n);
                }
                a = Some(n);
            } else if Some(k) == self.second {
                b = Some(map.next_value::<Num>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((a, b))
    }
}

/// An object key: borrowed from the input unless it holds escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> de::Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num::I(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num::U(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num::F(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Num, E> {
                Ok(Num::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Num, E> {
                Ok(Num::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Num::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Num::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_last_occurrence_and_skips_the_rest() {
        let v = br#"{"a": [1, {"ts": 9}], "ts": 5, "v": 2.5, "ts": 7, "t\u0073x": 1}"#;
        assert_eq!(
            pick(v, Some("ts"), Some("v")),
            Some((Some(Num::U(7)), Some(Num::F(2.5))))
        );
        assert_eq!(
            pick(br#"{"t\u0073": -3}"#, Some("ts"), None),
            Some((Some(Num::I(-3)), None))
        );
        assert_eq!(
            pick(br#"{"ts": "x", "v": null}"#, Some("ts"), Some("v")),
            Some((Some(Num::Other), Some(Num::Other)))
        );
        assert_eq!(pick(br#"{"ts": 1} x"#, Some("ts"), None), None);
        assert_eq!(pick(b"[1]", Some("ts"), None), None);
        assert_eq!(pick(b"{", Some("ts"), None), None);
        assert_eq!(
            pick(br#"{"x": 4}"#, Some("x"), Some("x")),
            Some((Some(Num::U(4)), Some(Num::U(4))))
        );
    }
}
