//! Whole numbers in the configuration file.
//!
//! JSON has one number type, and configuration written by JavaScript tools (the
//! reference implementation's among them) may spell a count or a duration `10.0`. Every
//! integer key of the file is read with [`opt`]: `10` and `10.0` are both 10, while
//! `10.5` (not whole) and `-1` for an unsigned key (out of range) are refused with a
//! message that, through the loader, names the key.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Integer types a configuration key may have, with their bounds.
pub trait Int: Sized {
    /// Smallest value.
    const MIN: i128;
    /// Largest value.
    const MAX: i128;
    /// The value, known to be within [`Int::MIN`]..=[`Int::MAX`].
    fn from_i128(n: i128) -> Self;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            const MIN: i128 = <$t>::MIN as i128;
            const MAX: i128 = <$t>::MAX as i128;
            fn from_i128(n: i128) -> Self {
                n as $t
            }
        }
    )*};
}
int!(u32, u64, i64, usize);

/// A JSON number with no fractional part, as an `i128` (wide enough for every key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole(pub i128);

impl Whole {
    /// `n` if it is whole: a float is accepted when it has no fractional part and lies
    /// within ±2^64 (beyond which no key's range reaches anyway).
    pub fn from_f64(n: f64) -> Result<Whole, String> {
        if !n.is_finite() || n.fract() != 0.0 {
            return Err(format!("expected a whole number, got {n}"));
        }
        if n.abs() > 18_446_744_073_709_551_616.0 {
            return Err(format!("{n} is out of range"));
        }
        Ok(Whole(n as i128))
    }

    /// The value as `T`, or why it does not fit.
    pub fn get<T: Int>(self) -> Result<T, String> {
        if self.0 < T::MIN || self.0 > T::MAX {
            return Err(format!(
                "{} is out of range (from {} to {})",
                self.0,
                T::MIN,
                T::MAX
            ));
        }
        Ok(T::from_i128(self.0))
    }
}

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Whole, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Whole, E> {
                Ok(Whole(n.into()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Whole, E> {
                Ok(Whole(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Whole, E> {
                Whole::from_f64(n).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads an optional integer key (`null` or absent: `None`); use with
/// `#[serde(default, deserialize_with = "whole::opt")]`.
pub fn opt<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Whole>::deserialize(d)?
        .map(|w| w.get().map_err(de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: Int>(json: &str) -> Result<Option<T>, String> {
        opt(&mut serde_json::Deserializer::from_str(json)).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_others_are_refused() {
        assert_eq!(parse::<u64>("10"), Ok(Some(10)));
        assert_eq!(parse::<u64>("10.0"), Ok(Some(10)));
        assert_eq!(parse::<u64>("1e3"), Ok(Some(1000)));
        assert_eq!(parse::<i64>("-2.0"), Ok(Some(-2)));
        assert_eq!(parse::<u32>("null"), Ok(None));
        let e = parse::<u64>("10.5").expect_err("fraction");
        assert!(e.contains("expected a whole number, got 10.5"), "{e}");
        let e = parse::<u64>("-1").expect_err("negative");
        assert!(e.contains("-1 is out of range (from 0 to"), "{e}");
        let e = parse::<u32>("4294967296.0").expect_err("too big");
        assert!(e.contains("out of range"), "{e}");
        let e = parse::<u64>("1e300").expect_err("huge");
        assert!(e.contains("out of range"), "{e}");
        let e = parse::<u64>(r#""10""#).expect_err("string");
        assert!(e.contains("a whole number"), "{e}");
    }
}
