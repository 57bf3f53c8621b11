//! Small HTML helpers: escaping, dates and byte counts as the page prints them.

use std::fmt::Write;

use bulwark_time::UnixTime;

/// Escapes text for HTML element content and for attribute values (double or single quoted).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline have no place on the page.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as an ISO 8601 UTC instant, `YYYY-MM-DDTHH:MM:SSZ` (what `<time datetime>`
/// and `Date.parse` read).
pub fn iso_utc(secs: i64) -> String {
    UnixTime(secs).zulu().replacen(' ', "T", 1)
}

/// A date as the page shows it: UTC text inside `<time>`, which the page's script rewrites in
/// the viewer's time zone, keeping UTC in the hover text.
pub fn time(secs: i64) -> String {
    let utc = UnixTime(secs).utc_minutes();
    format!(
        "<time datetime=\"{}\" title=\"{utc}\">{utc}</time>",
        iso_utc(secs)
    )
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `20.0 GiB`.
pub use bulwark_time::human_bytes;

/// A duration in the largest unit that keeps it readable: `45 s`, `12 min`, `5 h`, `3 d`.
pub fn human_duration(secs: i64) -> String {
    let a = secs.unsigned_abs();
    let s = if a < 120 {
        format!("{a} s")
    } else if a < 2 * 3600 {
        format!("{} min", (a + 30) / 60)
    } else if a < 2 * 86_400 {
        format!("{} h", (a + 1800) / 3600)
    } else {
        format!("{} d", (a + 43_200) / 86_400)
    };
    if secs < 0 {
        format!("-{s}")
    } else {
        s
    }
}

/// A short id for the page: the first 12 hex digits (the full id stays in the hover text).
pub fn short_id(id: &str) -> String {
    let short: String = id.chars().take(12).collect();
    format!(
        "<span class=\"id\" title=\"{}\">{}</span>",
        escape(id),
        escape(&short)
    )
}

/// An HTML table from a header and rows of already-escaped cells, in a scrolling wrapper so a
/// phone scrolls the table rather than the page.
pub fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "<div class=\"scroll\"><table class=\"{}\"><thead><tr>",
        escape(class)
    );
    for h in head {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_quotes_and_control_characters() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("a\u{7}b\nc"), "a\u{FFFD}b\nc");
        assert_eq!(escape("été"), "été");
    }

    #[test]
    fn dates_are_utc_text_inside_time_elements() {
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            time(1_795_000_000),
            "<time datetime=\"2026-11-18T11:06:40Z\" title=\"2026-11-18 11:06 UTC\">2026-11-18 11:06 UTC</time>"
        );
    }

    #[test]
    fn bytes_and_durations_in_human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 << 30), "20.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
        assert_eq!(human_duration(59), "59 s");
        assert_eq!(human_duration(600), "10 min");
        assert_eq!(human_duration(5 * 3600), "5 h");
        assert_eq!(human_duration(-3 * 86_400), "-3 d");
        assert_eq!(human_duration(3 * 86_400 - 60), "3 d", "rounded, not cut");
    }

    #[test]
    fn short_ids_keep_the_full_id_in_the_hover_text() {
        assert_eq!(
            short_id("0123456789abcdef<"),
            "<span class=\"id\" title=\"0123456789abcdef&lt;\">0123456789ab</span>"
        );
    }
}
