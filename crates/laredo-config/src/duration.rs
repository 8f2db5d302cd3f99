//! HOCON-style durations: `500ms`, `5s`, `5 seconds`, `24h`, `7d`, `1.5h`. A bare number
//! is milliseconds, as in HOCON. Unparseable values are errors, never zero.

use std::time::Duration;

/// Units as HOCON spells them, with their length in nanoseconds.
const UNITS: &[(&[&str], u128)] = &[
    (&["ns", "nano", "nanos", "nanosecond", "nanoseconds"], 1),
    (
        &["us", "micro", "micros", "microsecond", "microseconds"],
        1_000,
    ),
    (
        &["ms", "milli", "millis", "millisecond", "milliseconds"],
        1_000_000,
    ),
    (&["s", "second", "seconds"], 1_000_000_000),
    (&["m", "minute", "minutes"], 60 * 1_000_000_000),
    (&["h", "hour", "hours"], 3_600 * 1_000_000_000),
    (&["d", "day", "days"], 86_400 * 1_000_000_000),
];

/// Parses a HOCON duration such as `5s`, `10 seconds`, `500ms` or `7d`.
///
/// A number without a unit is milliseconds. Fractions are allowed (`1.5h`).
///
/// # Errors
///
/// A message naming the accepted forms when `text` is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let invalid = || {
        format!(
            "expected a duration such as \"500ms\", \"5s\", \"10 seconds\", \"24h\" or \"7d\", found {text:?}"
        )
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(invalid());
    }
    let unit_nanos = if unit.is_empty() {
        1_000_000
    } else {
        UNITS
            .iter()
            .find(|(names, _)| names.contains(&unit))
            .map(|(_, nanos)| *nanos)
            .ok_or_else(invalid)?
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || fraction.len() > 9 {
        return Err(invalid());
    }
    let whole: u128 = whole.parse().map_err(|_| invalid())?;
    let fraction_digits = fraction.len() as u32;
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| invalid())?
    };
    let scale = 10u128.pow(fraction_digits);
    let nanos = whole
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(fraction_value * unit_nanos / scale))
        .ok_or_else(|| format!("duration {text:?} is too large"))?;
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| format!("duration {text:?} is too large"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Writes a duration in the largest unit that represents it exactly: `5s`, `24h`,
/// `1500ms`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (names, unit) in UNITS.iter().rev() {
        if nanos.is_multiple_of(*unit) {
            return format!("{}{}", nanos / unit, names[0]);
        }
    }
    format!("{nanos}ns")
}

/// Parses a snapshot schedule: a duration, or `every <duration>`.
pub(crate) fn parse_schedule(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let rest = trimmed
        .strip_prefix("every ")
        .map(str::trim)
        .unwrap_or(trimmed);
    parse_duration(rest)
}

/// Serde glue. The schema pass has already checked every value, so these only have to
/// convert; they still return errors rather than panicking on unchecked input.
pub(crate) mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    fn to_duration(raw: Raw) -> Result<Duration, String> {
        match raw {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(text) => super::parse_duration(&text),
        }
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        to_duration(Raw::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    /// `Option<Duration>`.
    pub(crate) mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&super::super::format_duration(*d)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            Option::<super::Raw>::deserialize(d)?
                .map(super::to_duration)
                .transpose()
                .map_err(serde::de::Error::custom)
        }
    }

    /// `Option<Duration>` written as a schedule (`every 6h` or a duration).
    pub(crate) mod schedule {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            super::option::serialize(d, s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            match Option::<super::Raw>::deserialize(d)? {
                None => Ok(None),
                Some(super::Raw::Millis(ms)) => Ok(Some(Duration::from_millis(ms))),
                Some(super::Raw::Text(text)) => super::super::parse_schedule(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
            }
        }
    }

    /// A duration kept under a historical `_ms` key as an integer of milliseconds.
    pub(crate) mod millis {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            Ok(Duration::from_millis(u64::deserialize(d)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("0.001s"), Ok(Duration::from_millis(1)));
    }
}
