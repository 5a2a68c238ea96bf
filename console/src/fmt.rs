//! Small text formatting helpers shared by the state and the views.

use std::time::Duration;

use backpack_shared::model::HostPort;

use crate::event::Millis;

/// A short age: `0s`, `42s`, `5m`, `3h`, `2d`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// Age of a time in the past, from `now`.
pub fn ago(now: Millis, then: Millis) -> String {
    short_duration(Duration::from_millis(now.saturating_sub(then)))
}

/// `HH:MM:SS` of a unix time, shifted by the local UTC offset.
pub fn clock(ms: Millis, utc_offset_secs: i32) -> String {
    let secs = (ms / 1000) as i64 + utc_offset_secs as i64;
    let day = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// A ratio in 0..=1 as a rounded percentage, `38%`.
pub fn percent(ratio: f64) -> String {
    format!("{:.0}%", (ratio * 100.0).clamp(0.0, 999.0))
}

/// A per-second rate: `412/s`, `1.2k/s`.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 10_000.0 {
        format!("{:.0}k/s", per_sec / 1000.0)
    } else if per_sec >= 1000.0 {
        format!("{:.1}k/s", per_sec / 1000.0)
    } else if per_sec >= 10.0 || per_sec == 0.0 {
        format!("{per_sec:.0}/s")
    } else {
        format!("{per_sec:.1}/s")
    }
}

/// A per-second figure without the unit: `412`, `1.2k`, `2.5`.
pub fn rate_num(per_sec: f64) -> String {
    let r = rate(per_sec);
    r.strip_suffix("/s").unwrap_or(&r).to_string()
}

/// Cuts a string to `width` characters, marking the cut with `…`.
pub fn ellipsize(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Servers as the admin commands take them: `host1:port1,host2:port2`.
pub fn addr_list<'a>(servers: impl IntoIterator<Item = &'a HostPort>) -> String {
    servers
        .into_iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Word-wraps `text` to lines of at most `width` characters.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(10);
    let mut out = vec![];
    let mut line = String::new();
    for word in text.split(' ') {
        let wl = word.chars().count();
        let ll = line.chars().count();
        if ll > 0 && ll + 1 + wl > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > width {
            let head: String = line.chars().take(width).collect();
            line = line.chars().skip(width).collect();
            out.push(head);
        }
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

/// Sort key that orders numeric ids numerically and others after them.
pub fn id_key(id: &str) -> (u8, u64, String) {
    match id.parse::<u64>() {
        Ok(n) => (0, n, String::new()),
        Err(_) => (1, 0, id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(short_duration(Duration::from_secs(3)), "3s");
        assert_eq!(short_duration(Duration::from_secs(600)), "10m");
        assert_eq!(short_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(short_duration(Duration::from_secs(9 * 86_400)), "9d");
        assert_eq!(clock(1_700_000_000_000, 0), "22:13:20");
        assert_eq!(clock(1_700_000_000_000, 3600), "23:13:20");
        assert_eq!(percent(0.384), "38%");
        assert_eq!(rate(412.2), "412/s");
        assert_eq!(rate(1234.0), "1.2k/s");
        assert_eq!(rate(2.25), "2.2/s");
        assert_eq!(ellipsize("abcdef", 4), "abc…");
        assert_eq!(ellipsize("abc", 4), "abc");
        assert!(id_key("2") < id_key("10"));
        assert!(id_key("10") < id_key("a"));
    }
}
