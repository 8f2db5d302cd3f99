//! Calendar arithmetic for date and timestamp values (proleptic Gregorian, UTC).
//!
//! Values hold days or microseconds since the Unix epoch; this module turns them into
//! ISO 8601 text and back without a calendar dependency.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 of a proleptic Gregorian civil date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "month and day are small and positive"
    )]
    (year, month as u32, day as u32)
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// Microseconds since the Unix epoch of a [`SystemTime`].
pub fn system_time_to_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// Parses an RFC 3339 timestamp (`2024-05-01T10:00:00Z`, `2024-05-01 10:00:00.5+02:00`)
/// into microseconds since the Unix epoch. A missing offset is read as UTC.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    let bytes = s.as_bytes();
    if bytes.len() < 19 || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = num(0..4)?;
    let month = u32::try_from(num(5..7)?)
        .ok()
        .filter(|m| (1..=12).contains(m))?;
    let day = u32::try_from(num(8..10)?)
        .ok()
        .filter(|d| (1..=31).contains(d))?;
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let second = num(17..19)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut scale = 100_000i64;
        for b in frac.bytes().take(digits.min(6)) {
            micros += i64::from(b - b'0') * scale;
            scale /= 10;
        }
        rest = &frac[digits..];
    }
    let offset_seconds = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            // Not sliced by byte index: the text may hold multi-byte characters.
            let body = rest.get(1..)?;
            if !body.bytes().all(|b| b.is_ascii_digit() || b == b':') {
                return None;
            }
            let (h, m) = match body.len() {
                2 => (body.parse::<i64>().ok()?, 0),
                4 => (body.get(0..2)?.parse().ok()?, body.get(2..4)?.parse().ok()?),
                5 if body.as_bytes()[2] == b':' => {
                    (body.get(0..2)?.parse().ok()?, body.get(3..5)?.parse().ok()?)
                }
                _ => return None,
            };
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(
        days * MICROS_PER_DAY
            + (hour * 3600 + minute * 60 + second - offset_seconds) * MICROS_PER_SECOND
            + micros,
    )
}

pub(crate) fn write_date(f: &mut fmt::Formatter<'_>, days: i32) -> fmt::Result {
    match days {
        i32::MAX => f.write_str("infinity"),
        i32::MIN => f.write_str("-infinity"),
        _ => {
            let (y, m, d) = civil_from_days(i64::from(days));
            write_ymd(f, y, m, d)
        }
    }
}

fn write_ymd(f: &mut fmt::Formatter<'_>, y: i64, m: u32, d: u32) -> fmt::Result {
    if (0..=9999).contains(&y) {
        write!(f, "{y:04}-{m:02}-{d:02}")
    } else {
        write!(f, "{y:+05}-{m:02}-{d:02}")
    }
}

pub(crate) fn write_time(f: &mut fmt::Formatter<'_>, micros: i64) -> fmt::Result {
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    let frac = micros.rem_euclid(MICROS_PER_SECOND);
    write!(
        f,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )?;
    write_fraction(f, frac)
}

fn write_fraction(f: &mut fmt::Formatter<'_>, frac: i64) -> fmt::Result {
    if frac == 0 {
        return Ok(());
    }
    let digits = format!("{frac:06}");
    write!(f, ".{}", digits.trim_end_matches('0'))
}

pub(crate) fn write_offset(f: &mut fmt::Formatter<'_>, offset_seconds: i32) -> fmt::Result {
    if offset_seconds == 0 {
        return f.write_str("Z");
    }
    let sign = if offset_seconds < 0 { '-' } else { '+' };
    let abs = offset_seconds.unsigned_abs();
    write!(f, "{sign}{:02}:{:02}", abs / 3600, (abs / 60) % 60)?;
    if !abs.is_multiple_of(60) {
        write!(f, ":{:02}", abs % 60)?;
    }
    Ok(())
}

pub(crate) fn write_timestamp(f: &mut fmt::Formatter<'_>, micros: i64, utc: bool) -> fmt::Result {
    match micros {
        i64::MAX => return f.write_str("infinity"),
        i64::MIN => return f.write_str("-infinity"),
        _ => {}
    }
    let days = micros.div_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    write_ymd(f, y, m, d)?;
    f.write_str("T")?;
    write_time(f, micros.rem_euclid(MICROS_PER_DAY))?;
    if utc {
        f.write_str("Z")?;
    }
    Ok(())
}

/// ISO 8601 duration: `P1Y2M3DT4H5M6.5S`, `PT0S` for zero.
pub(crate) fn write_interval(
    f: &mut fmt::Formatter<'_>,
    months: i32,
    days: i32,
    micros: i64,
) -> fmt::Result {
    f.write_str("P")?;
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        write!(f, "{years}Y")?;
    }
    if months != 0 {
        write!(f, "{months}M")?;
    }
    if days != 0 {
        write!(f, "{days}D")?;
    }
    if micros != 0 || (years == 0 && months == 0 && days == 0) {
        f.write_str("T")?;
        let negative = micros < 0;
        let abs = micros.unsigned_abs();
        let secs = abs / 1_000_000;
        let frac = abs % 1_000_000;
        let sign = if negative { "-" } else { "" };
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h != 0 {
            write!(f, "{sign}{h}H")?;
        }
        if m != 0 {
            write!(f, "{sign}{m}M")?;
        }
        if s != 0 || frac != 0 || (h == 0 && m == 0) {
            write!(f, "{sign}{s}")?;
            if frac != 0 {
                let digits = format!("{frac:06}");
                write!(f, ".{}", digits.trim_end_matches('0'))?;
            }
            f.write_str("S")?;
        }
    }
    Ok(())
}

pub(crate) fn write_uuid(f: &mut fmt::Formatter<'_>, u: &[u8; 16]) -> fmt::Result {
    for (idx, byte) in u.iter().enumerate() {
        if matches!(idx, 4 | 6 | 8 | 10) {
            f.write_str("-")?;
        }
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }

    #[test]
    fn text_with_multibyte_characters_is_no_timestamp_and_no_panic() {
        for text in [
            "2024-01-01T00:00:00+1é1",
            "2024-01-01T00:00:00+é1",
            "2024-01-01T00:00:00-é",
            "2024-01-01T00:00:00.5+0é:0",
        ] {
            assert_eq!(parse_rfc3339_micros(text), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_text_after_a_valid_prefix_parses_or_is_refused_without_panic(tail in "\\PC{0,8}") {
            let _ = parse_rfc3339_micros(&format!("2024-01-01T00:00:00{tail}"));
        }
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("1970-01-01T01:00:00.5+01:00"),
            Some(500_000)
        );
        assert_eq!(
            parse_rfc3339_micros("2024-01-01 00:00:00"),
            Some(19_723 * MICROS_PER_DAY)
        );
        assert_eq!(parse_rfc3339_micros("not a time"), None);
        assert_eq!(parse_rfc3339_micros("2024-13-01T00:00:00Z"), None);
    }

    proptest! {
        #[test]
        fn civil_round_trip(days in -3_000_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn timestamp_text_round_trip(micros in -60_000_000_000_000_000i64..200_000_000_000_000_000) {
            let text = crate::Value::TimestampTz(micros).to_string();
            prop_assert_eq!(parse_rfc3339_micros(&text), Some(micros));
        }
    }
}
