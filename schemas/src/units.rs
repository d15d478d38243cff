//! The one grammar for sizes and durations in every flightrec configuration (recorder,
//! triggers, collector) and on the command line.
//!
//! - Sizes: a whole number and a binary unit, `4096` or `4096B`, `512KiB`, `8MiB`, `1GiB`,
//!   `2TiB` (`K`/`KB`, `M`/`MB`... are read as the binary units too, case-insensitive).
//! - Durations: a number, with an optional fraction, and a unit: `750ns`, `50us` (or `µs`),
//!   `200ms`, `1.5s`, `5m` (or `min`), `2h`, `30d`. `0` needs no unit.
//!
//! Durations in configuration structs are [`std::time::Duration`] written through the
//! [`duration`] serde module, so `--check-config` prints them back in the same grammar.

use std::time::Duration;

/// A size or duration that does not follow the grammar; the message quotes it and says what
/// is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number followed by a unit.
    #[error("size {0:?}: expected a whole number and a unit (B, KiB, MiB, GiB or TiB)")]
    SizeSyntax(String),
    /// A unit that is not a size unit.
    #[error("size {text:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB or TiB)")]
    SizeUnit {
        /// The whole value.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// Above 2^64 bytes.
    #[error("size {0:?} is too large")]
    SizeRange(String),
    /// Not a number followed by a unit.
    #[error("duration {0:?}: expected a number and a unit (ns, us, ms, s, m, h or d)")]
    DurationSyntax(String),
    /// A unit that is not a time unit.
    #[error("duration {text:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h or d)")]
    DurationUnit {
        /// The whole value.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// Above 2^64 ns (about 584 years).
    #[error("duration {0:?} is too long")]
    DurationRange(String),
}

/// Parses a size into bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| UnitError::SizeSyntax(text.to_owned()))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(UnitError::SizeUnit {
                text: text.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| UnitError::SizeRange(text.to_owned()))
}

/// Parses a duration.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let syntax = || UnitError::DurationSyntax(text.to_owned());
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(syntax());
    }
    let scale: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "" if num.bytes().all(|b| b == b'0' || b == b'.') => 0,
        "" => return Err(syntax()),
        other => {
            return Err(UnitError::DurationUnit {
                text: text.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    // Whole and fractional parts in integers: "1.5s" is exactly 1_500_000_000 ns.
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let range = || UnitError::DurationRange(text.to_owned());
    let whole: u128 = whole.parse().map_err(|_| range())?;
    let mut ns = whole.checked_mul(scale).ok_or_else(range)?;
    if !frac.is_empty() {
        let digits = frac.len().min(30) as u32;
        let f: u128 = frac[..digits as usize].parse().map_err(|_| syntax())?;
        ns = ns
            .checked_add(f * scale / 10u128.pow(digits))
            .ok_or_else(range)?;
    }
    let ns = u64::try_from(ns).map_err(|_| range())?;
    Ok(Duration::from_nanos(ns))
}

/// Writes `d` in the grammar, in the largest unit that keeps it exact (`5s`, `200ms`, `1h`).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    for (unit, scale) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns.is_multiple_of(scale) {
            return format!("{}{unit}", ns / scale);
        }
    }
    format!("{ns}ns")
}

/// `#[serde(with = "schemas::units::duration")]` for a [`Duration`] field: read and written
/// as a string in the grammar (`"5s"`).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `d` as `"5s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Reads `"5s"`; a bare number is refused with the grammar in the message.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => super::parse_duration(&t).map_err(D::Error::custom),
            Raw::Number(0.0) => Ok(Duration::ZERO),
            Raw::Number(n) => Err(D::Error::custom(format!(
                "duration {n}: write it as a string with a unit, e.g. \"{n}ms\" or \"{n}s\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in [
            ("8MiB", Some(8 << 20)),
            ("8M", Some(8 << 20)),
            ("8mb", Some(8 << 20)),
            ("512KiB", Some(512 << 10)),
            ("1GiB", Some(1 << 30)),
            ("2TiB", Some(2 << 40)),
            ("4096", Some(4096)),
            (" 4096B ", Some(4096)),
            ("0", Some(0)),
            ("8 MiB", Some(8 << 20)),
            (" 2 MiB ", Some(2 << 20)),
            ("MiB", None),
            ("1.5MiB", None),
            ("8XB", None),
            ("-1", None),
            ("99999999999999999999GiB", None),
            ("16777216TiB", None),
        ] {
            assert_eq!(parse_size(text).ok(), want, "{text}");
        }
        assert!(
            parse_size("8XB")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
    }

    #[test]
    fn durations() {
        let ms = |n| Some(Duration::from_millis(n));
        for (text, want) in [
            ("200ms", ms(200)),
            ("1.5s", ms(1500)),
            ("5s", ms(5000)),
            ("2m", ms(120_000)),
            ("2min", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("30d", ms(30 * 86_400_000)),
            ("50us", Some(Duration::from_micros(50))),
            ("50µs", Some(Duration::from_micros(50))),
            ("750ns", Some(Duration::from_nanos(750))),
            ("0.0001ms", Some(Duration::from_nanos(100))),
            ("0", Some(Duration::ZERO)),
            ("0s", Some(Duration::ZERO)),
            (" 3 ms ", ms(3)),
            ("10", None),
            ("ms", None),
            ("99999999999999m", None),
            ("5", None),
            ("s", None),
            (".5s", None),
            ("1.s", None),
            ("1.2.3s", None),
            ("5 parsecs", None),
            ("-5s", None),
            ("600000d", None),
        ] {
            assert_eq!(parse_duration(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn formatting_reads_back() {
        for text in ["0s", "5s", "200ms", "1h", "30d", "90s", "1500us", "7ns"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(format_duration(Duration::from_millis(60_000)), "1m");
    }
}
