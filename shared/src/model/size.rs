//! Size notation of the original's command line (`100gb`, `1.5tb`, `512kb`):
//! 1024-based, case-insensitive, decimals allowed; and the original's way of
//! printing sizes (`38.5gb`, `1.21kb`, `12b`).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "invalid size {input:?}: {reason}; write a number followed by b, kb, mb, gb or tb, e.g. 100gb or 1.5tb"
)]
pub struct SizeError {
    pub input: String,
    pub reason: &'static str,
}

const UNITS: [(&str, u32); 5] = [("tb", 4), ("gb", 3), ("mb", 2), ("kb", 1), ("b", 0)];

/// Parses `100gb`, `1.5TB`, `512kb`, `42b` or a bare byte count `42`.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.starts_with('-') {
        return Err(err("it is negative"));
    }
    let (number, power) = UNITS
        .iter()
        .find_map(|(unit, power)| s.strip_suffix(unit).map(|n| (n.trim(), *power)))
        .unwrap_or((s.as_str(), 0));
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(err("it is not a number with a unit"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| err("it is not a number with a unit"))?;
    let bytes = value * 1024f64.powi(power as i32);
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("it is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Prints a size as the original does: the largest of gb, mb, kb that the
/// value reaches, 2 decimals with trailing zeros dropped, else `<n>b`.
pub fn format_size(bytes: u64) -> String {
    for (unit, power) in [("gb", 3), ("mb", 2), ("kb", 1)] {
        let scale = 1024f64.powi(power);
        if bytes as f64 >= scale {
            let value = (bytes as f64 / scale * 100.0).round() / 100.0;
            return format!("{}{unit}", trim_number(value));
        }
    }
    format!("{bytes}b")
}

fn trim_number(value: f64) -> String {
    let s = format!("{value:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: u64) {
        assert_eq!(parse_size(input), Ok(expected), "{input}");
    }

    #[test]
    fn parses_the_original_notation_and_more() {
        check("100gb", 100 * 1024 * 1024 * 1024);
        check("100GB", 107374182400);
        check("1.5tb", 1024u64.pow(4) * 3 / 2);
        check("512kb", 512 * 1024);
        check("1.5gb", 1610612736);
        check("12b", 12);
        check("12", 12);
        check(" 3 mb ", 3 * 1024 * 1024);
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "gb",
            "abc",
            "-1gb",
            "1.2.3gb",
            "10pb",
            "1e3gb",
            "99999999999999tb",
        ] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.to_string().contains("e.g. 100gb"), "{e}");
        }
    }

    #[test]
    fn a_negative_size_says_so() {
        assert_eq!(
            parse_size("-5gb").expect_err("negative").to_string(),
            "invalid size \"-5gb\": it is negative; write a number followed by b, kb, mb, gb or tb, e.g. 100gb or 1.5tb"
        );
    }

    #[test]
    fn prints_like_the_original() {
        assert_eq!(format_size(0), "0b");
        assert_eq!(format_size(1023), "1023b");
        assert_eq!(format_size(1234), "1.21kb");
        assert_eq!(format_size(107374182400), "100gb");
        assert_eq!(format_size(1610612736), "1.5gb");
        assert_eq!(format_size(41339060224), "38.5gb");
        assert_eq!(format_size(108984795136), "101.5gb");
        assert_eq!(format_size(1024 * 1024), "1mb");
    }
}
