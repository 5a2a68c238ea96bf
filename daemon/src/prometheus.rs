//! The Prometheus text exposition format (version 0.0.4), written by hand
//! for the coordinator's and the replicator's `/metrics`.
//!
//! A metric family is its `# HELP` and `# TYPE` lines, then its samples:
//!
//! ```
//! use backpack_daemon::prometheus::{Kind, Text};
//! let mut m = Text::new("backpack_replicator_");
//! m.one("copies_total", Kind::Counter, "Files copied.", 7);
//! m.family("queue_server_up", Kind::Gauge, "1 when the server answered.")
//!     .sample(&[("server", "127.0.0.1:6379")], 1);
//! let text = m.finish();
//! assert_eq!(
//!     text.lines().collect::<Vec<_>>(),
//!     [
//!         "# HELP backpack_replicator_copies_total Files copied.",
//!         "# TYPE backpack_replicator_copies_total counter",
//!         "backpack_replicator_copies_total 7",
//!         "# HELP backpack_replicator_queue_server_up 1 when the server answered.",
//!         "# TYPE backpack_replicator_queue_server_up gauge",
//!         "backpack_replicator_queue_server_up{server=\"127.0.0.1:6379\"} 1",
//!     ]
//! );
//! ```
//!
//! Why not a crate: `prometheus-client` writes OpenMetrics (counter
//! families named without `_total`, a closing `# EOF`, its own float
//! format), which would change what dashboards and tests read; the
//! writer is this file.

use std::fmt::{Display, Write as _};

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A `/metrics` answer being written: every metric name starts with
/// `prefix` (`backpack_coordinator_`).
pub struct Text {
    prefix: &'static str,
    out: String,
}

impl Text {
    pub fn new(prefix: &'static str) -> Text {
        Text {
            prefix,
            out: String::with_capacity(4096),
        }
    }

    /// Starts the family `name`: its HELP and TYPE lines. A family without
    /// samples (nothing to count yet) is still declared.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        let prefix = self.prefix;
        let _ = writeln!(self.out, "# HELP {prefix}{name} {help}");
        let _ = writeln!(self.out, "# TYPE {prefix}{name} {}", kind.as_str());
        Family {
            out: &mut self.out,
            name: format!("{prefix}{name}"),
        }
    }

    /// A family of one sample without labels.
    pub fn one(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help).sample(&[], value);
    }

    /// A family of one sample without labels when `value` is known; when
    /// not, the family is still declared, without a sample.
    pub fn maybe(&mut self, name: &str, kind: Kind, help: &str, value: Option<impl Display>) {
        let mut family = self.family(name, kind, help);
        if let Some(v) = value {
            family.sample(&[], v);
        }
    }

    /// The text, every line ending in a newline.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one family.
pub struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl Family<'_> {
    /// `<name>{<labels>} <value>`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        self.sample_of("", labels, value)
    }

    /// A sample of a histogram's series: `<name><suffix>{<labels>} <value>`
    /// (`_bucket`, `_sum`, `_count`).
    pub fn sample_of(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        let _ = write!(self.out, "{}{suffix}", self.name);
        for (i, (key, v)) in labels.iter().enumerate() {
            let open = if i == 0 { "{" } else { "," };
            let _ = write!(self.out, "{open}{key}=\"{}\"", escape_label(v));
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_labels_and_escapes() {
        let mut m = Text::new("p_");
        m.family("empty", Kind::Gauge, "Nothing yet.");
        m.maybe("unknown", Kind::Gauge, "Not read.", None::<u64>);
        m.family("by", Kind::Counter, "Two labels.")
            .sample(&[("a", "x"), ("b", "say \"hi\"\\\n")], 2)
            .sample(&[], format_args!("{:.3}", 1.5));
        let mut h = m.finish();
        let want = "# HELP p_empty Nothing yet.\n\
                    # TYPE p_empty gauge\n\
                    # HELP p_unknown Not read.\n\
                    # TYPE p_unknown gauge\n\
                    # HELP p_by Two labels.\n\
                    # TYPE p_by counter\n\
                    p_by{a=\"x\",b=\"say \\\"hi\\\"\\\\\\n\"} 2\n\
                    p_by 1.500\n";
        assert_eq!(h, want);

        let mut m = Text::new("p_");
        m.family("t", Kind::Histogram, "Times.")
            .sample_of("_bucket", &[("le", "0.5")], 1)
            .sample_of("_sum", &[], 0.25)
            .sample_of("_count", &[], 1);
        h = m.finish();
        assert!(
            h.ends_with("p_t_bucket{le=\"0.5\"} 1\np_t_sum 0.25\np_t_count 1\n"),
            "{h}"
        );
    }
}
