//! The page's charts as inline SVG: the lock timeline (every sealed file as a bar from its
//! seal to its expiry, grouped by chain) and the space charts.
//!
//! Coordinates are in a fixed 1000-unit-wide view box; the SVG scales to its container.

use std::fmt::Write;

use bulwark_time::UnixTime;

use crate::html::{escape, human_bytes, iso_utc};
use crate::{Report, Space, DAY};

const W: f64 = 1000.0;
const LABEL: f64 = 250.0;
const ROW: f64 = 14.0;
const BAR: f64 = 10.0;
const HEAD: f64 = 18.0;
const AXIS: f64 = 34.0;

/// A time axis from `t0` to `t1` mapped onto `[x0, x1]`.
struct Axis {
    t0: i64,
    t1: i64,
    x0: f64,
    x1: f64,
}

impl Axis {
    fn x(&self, t: i64) -> f64 {
        let t = t.clamp(self.t0, self.t1);
        self.x0 + (t - self.t0) as f64 / (self.t1 - self.t0).max(1) as f64 * (self.x1 - self.x0)
    }

    /// Tick marks at whole UTC days, about eight over the axis, with their date labels.
    fn ticks(&self, top: f64, bottom: f64) -> String {
        const STEPS: [i64; 11] = [1, 2, 7, 14, 30, 61, 91, 182, 365, 730, 1825];
        let span_days = ((self.t1 - self.t0) / DAY).max(1);
        let step = STEPS
            .iter()
            .copied()
            .find(|s| span_days / s <= 8)
            .unwrap_or(3650);
        let mut s = String::new();
        let mut day = self.t0.div_euclid(DAY) + 1;
        day += (step - day.rem_euclid(step)) % step;
        while day * DAY <= self.t1 {
            let x = self.x(day * DAY);
            let _ = write!(
                s,
                "<line class=\"tick\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>\
                 <text class=\"tick-label\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                top - 6.0,
                UnixTime(day * DAY).date()
            );
            day += step;
        }
        s
    }

    /// A vertical marker line from `top` to `bottom` with its label at `label_y`.
    fn marker(
        &self,
        t: i64,
        class: &str,
        label: &str,
        label_y: f64,
        top: f64,
        bottom: f64,
    ) -> String {
        let x = self.x(t);
        format!(
            "<line class=\"{class}\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>\
             <text class=\"{class}-label\" x=\"{x:.1}\" y=\"{label_y:.1}\" text-anchor=\"middle\">{}</text>",
            escape(label)
        )
    }
}

/// The lock timeline: one bar per sealed file, grouped by job and chain, on a time axis with
/// "today" and the 7- and 30-day horizons marked. `None` when nothing is sealed.
pub fn timeline(r: &Report) -> Option<String> {
    let now = r.generated_unix;
    let sealed: Vec<_> = r.sealed().collect();
    if sealed.is_empty() {
        return None;
    }
    let t0 = sealed
        .iter()
        .map(|(_, _, _, l)| l.sealed_unix)
        .min()
        .unwrap_or(now)
        .min(now - DAY);
    let t1 = sealed
        .iter()
        .map(|(_, _, _, l)| l.expiry_unix)
        .max()
        .unwrap_or(now)
        .max(now + 31 * DAY);
    let axis = Axis {
        t0: t0 - DAY / 2,
        t1: t1 + DAY / 2,
        x0: LABEL,
        x1: W - 10.0,
    };
    let mut body = String::new();
    let mut y = AXIS + 12.0;
    for job in &r.jobs {
        for chain in &job.chains {
            let files: Vec<_> = chain
                .points
                .iter()
                .filter_map(|p| p.lock.as_ref().map(|l| (p, l)))
                .collect();
            if files.is_empty() {
                continue;
            }
            let short: String = chain.id.chars().take(12).collect();
            let _ = write!(
                body,
                "<g class=\"chain\" data-job=\"{}\" data-chain=\"{}\">\
                 <text class=\"chain-label\" x=\"4\" y=\"{:.1}\">{} · chain {}</text>",
                escape(&job.name),
                escape(&chain.id),
                y + 12.0,
                escape(&job.name),
                escape(&short)
            );
            y += HEAD;
            for (p, l) in files {
                let x0 = axis.x(l.sealed_unix);
                let x1 = axis.x(l.expiry_unix).max(x0 + 2.0);
                let state = if l.expiry_unix <= now { " expired" } else { "" };
                let pshort: String = p.id.chars().take(12).collect();
                let _ = write!(
                    body,
                    "<text class=\"point-label\" x=\"14\" y=\"{:.1}\">{} {}</text>\
                     <rect class=\"lockbar gfs-{}{state}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR}\" rx=\"2\" \
                     data-job=\"{}\" data-chain=\"{}\" data-point=\"{}\" data-class=\"{}\" data-sealed=\"{}\" data-expiry=\"{}\">\
                     <title>{} · {} {} ({}): sealed {}, locked until {}</title></rect>",
                    y + BAR - 1.0,
                    escape(&pshort),
                    escape(&p.kind),
                    p.class.as_str(),
                    x1 - x0,
                    escape(&job.name),
                    escape(&chain.id),
                    escape(&p.id),
                    p.class.as_str(),
                    iso_utc(l.sealed_unix),
                    iso_utc(l.expiry_unix),
                    escape(&job.name),
                    escape(&p.kind),
                    escape(&p.id),
                    p.class.as_str(),
                    UnixTime(l.sealed_unix).utc_minutes(),
                    UnixTime(l.expiry_unix).utc_minutes(),
                );
                y += ROW;
            }
            body.push_str("</g>");
            y += 6.0;
        }
    }
    let h = y + 8.0;
    let mut s = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {W} {h:.0}\" role=\"img\" aria-label=\"Lock timeline: {} sealed files from seal to expiry\" xmlns=\"http://www.w3.org/2000/svg\">",
        sealed.len()
    );
    let _ = write!(
        s,
        "<rect class=\"horizon-band\" x=\"{:.1}\" y=\"{AXIS:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
        axis.x(now),
        axis.x(now + 30 * DAY) - axis.x(now),
        h - AXIS
    );
    s.push_str(&axis.ticks(AXIS, h));
    s.push_str(&body);
    s.push_str(&axis.marker(now + 7 * DAY, "horizon", "+7 d", 12.0, 16.0, h));
    s.push_str(&axis.marker(now + 30 * DAY, "horizon", "+30 d", 12.0, 16.0, h));
    s.push_str(&axis.marker(now, "today", "today", 12.0, 16.0, h));
    s.push_str("</svg>");
    Some(s)
}

/// Logical, allocated (what `du` counts) and physical bytes side by side, and the filesystem
/// split into restore points, other data and free space.
pub fn space_bars(sp: &Space) -> String {
    let max = sp
        .logical_bytes
        .max(sp.allocated_bytes)
        .max(sp.physical_bytes)
        .max(1);
    let rows = [
        ("logical", "logical (file sizes)", sp.logical_bytes),
        (
            "allocated",
            "allocated (what du counts)",
            sp.allocated_bytes,
        ),
        ("physical", "physical (each extent once)", sp.physical_bytes),
        ("shared", "shared by cloning", sp.shared_bytes),
    ];
    let mut s = format!(
        "<svg class=\"space\" viewBox=\"0 0 {W} 190\" role=\"img\" aria-label=\"Space of the restore points\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, (class, label, v)) in rows.iter().enumerate() {
        let y = 8.0 + i as f64 * 26.0;
        let w = (*v as f64 / max as f64 * (W - 420.0)).max(if *v > 0 { 2.0 } else { 0.0 });
        let _ = write!(
            s,
            "<text class=\"bar-label\" x=\"4\" y=\"{:.1}\">{}</text>\
             <rect class=\"sp-{class}\" x=\"250\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" rx=\"2\" data-bytes=\"{v}\"><title>{}: {}</title></rect>\
             <text class=\"bar-value\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y + 14.0,
            escape(label),
            escape(label),
            human_bytes(*v),
            256.0 + w,
            y + 14.0,
            human_bytes(*v)
        );
    }
    // The filesystem: restore points, other data, free.
    let total = sp.fs_total_bytes.max(1);
    let used = sp.fs_total_bytes.saturating_sub(sp.fs_free_bytes);
    let points = sp.physical_bytes.min(used);
    let other = used - points;
    let y = 124.0;
    let _ = write!(
        s,
        "<text class=\"bar-label\" x=\"4\" y=\"{:.1}\">filesystem {}</text>",
        y + 14.0,
        escape(&sp.filesystem)
    );
    let mut x = 250.0;
    for (class, label, v) in [
        ("fs-points", "restore points", points),
        ("fs-other", "other data", other),
        ("fs-free", "free", sp.fs_free_bytes.min(total)),
    ] {
        let w = v as f64 / total as f64 * (W - 260.0);
        let _ = write!(
            s,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" data-bytes=\"{v}\"><title>{label}: {}</title></rect>",
            human_bytes(v)
        );
        x += w;
    }
    let _ = write!(
        s,
        "<text class=\"bar-value\" x=\"250\" y=\"{:.1}\">restore points {} · other {} · free {} of {}</text></svg>",
        y + 40.0,
        human_bytes(points),
        human_bytes(other),
        human_bytes(sp.fs_free_bytes),
        human_bytes(sp.fs_total_bytes)
    );
    s
}

/// Physical bytes that stay locked at least until each date, as columns on a time axis from
/// now, with the immutability service's cap as a line when it is known and in range.
/// `None` when nothing is locked.
pub fn locked_by_date(sp: &Space, now: i64) -> Option<String> {
    if sp.locked.is_empty() {
        return None;
    }
    let last = sp.locked.iter().map(|d| d.until_unix).max().unwrap_or(now);
    let top = sp
        .locked
        .iter()
        .map(|d| d.physical_bytes)
        .max()
        .unwrap_or(0);
    // The cap is drawn only when it would not flatten the columns to nothing.
    let cap = sp.locked_cap_bytes.filter(|c| *c <= top.saturating_mul(4));
    let scale = top.max(cap.unwrap_or(0)).max(1) as f64;
    let (h, base) = (180.0, 150.0);
    let axis = Axis {
        t0: now - DAY,
        t1: last.max(now + 31 * DAY) + DAY,
        x0: 60.0,
        x1: W - 20.0,
    };
    let mut s = format!(
        "<svg class=\"locked\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"Bytes locked until each date\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    s.push_str(
        &axis
            .ticks(base + 24.0, base + 16.0)
            .replace("tick-label", "tick-label below"),
    );
    for d in &sp.locked {
        let x = axis.x(d.until_unix);
        let bh = d.physical_bytes as f64 / scale * (base - 20.0);
        let _ = write!(
            s,
            "<rect class=\"lockcol\" x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"{bh:.1}\" data-until=\"{}\" data-bytes=\"{}\">\
             <title>until {}: {} files, {} physical bytes cannot be freed before then</title></rect>",
            x - 3.0,
            base - bh,
            iso_utc(d.until_unix),
            d.physical_bytes,
            UnixTime(d.until_unix).utc_minutes(),
            d.files,
            human_bytes(d.physical_bytes)
        );
    }
    let _ = write!(
        s,
        "<line class=\"baseline\" x1=\"60\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\"/>\
         <text class=\"bar-value\" x=\"4\" y=\"{:.1}\">{}</text>",
        W - 20.0,
        base - (top as f64 / scale * (base - 20.0)) + 4.0,
        human_bytes(top)
    );
    if let Some(c) = cap {
        let y = base - c as f64 / scale * (base - 20.0);
        let _ = write!(
            s,
            "<line class=\"cap\" x1=\"60\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"cap-label\" x=\"64\" y=\"{:.1}\">cap {}</text>",
            W - 20.0,
            y - 3.0,
            human_bytes(c)
        );
    }
    s.push_str(&axis.marker(now, "today", "today", 12.0, 16.0, base));
    s.push_str("</svg>");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Chain, Gfs, Job, Lock, LockedDay, Point};

    fn report() -> Report {
        let now = 20_000 * DAY;
        let p = |id: &str, class: Gfs, s: i64, e: i64| Point {
            id: id.into(),
            kind: "full".into(),
            class,
            created_unix: s,
            lock: Some(Lock {
                sealed_unix: s,
                expiry_unix: e,
                state: "immutable".into(),
            }),
            ..Point::default()
        };
        Report {
            generated_unix: now,
            jobs: vec![Job {
                name: "vm<1>".into(),
                chains: vec![
                    Chain {
                        id: "aa".into(),
                        points: vec![
                            p("p1", Gfs::Weekly, now - 10 * DAY, now - DAY),
                            p("p2", Gfs::Regular, now - 9 * DAY, now + 5 * DAY),
                        ],
                    },
                    Chain {
                        id: "bb".into(),
                        points: vec![
                            p("p3", Gfs::Yearly, now - DAY, now + 365 * DAY),
                            Point::default(),
                        ],
                    },
                ],
                ..Job::default()
            }],
            ..Report::default()
        }
    }

    #[test]
    fn the_timeline_has_one_bar_per_sealed_file_with_its_dates_and_class() {
        let r = report();
        let svg = timeline(&r).unwrap();
        assert_eq!(svg.matches("<rect class=\"lockbar").count(), 3);
        assert_eq!(svg.matches("<g class=\"chain\"").count(), 2);
        for (_, _, p, l) in r.sealed() {
            let needle = format!(
                "data-point=\"{}\" data-class=\"{}\" data-sealed=\"{}\" data-expiry=\"{}\"",
                p.id,
                p.class.as_str(),
                iso_utc(l.sealed_unix),
                iso_utc(l.expiry_unix)
            );
            assert!(svg.contains(&needle), "{needle} not in {svg}");
        }
        assert!(svg.contains("gfs-weekly expired"));
        assert!(svg.contains("gfs-yearly"));
        assert!(svg.contains("class=\"today\""));
        assert!(svg.contains(">+7 d<") && svg.contains(">+30 d<"));
        assert!(svg.contains("vm&lt;1&gt;") && !svg.contains("vm<1>"));
    }

    #[test]
    fn bars_run_left_to_right_from_seal_to_expiry() {
        let r = report();
        let svg = timeline(&r).unwrap();
        let attr = |bar: &str, name: &str| -> f64 {
            let at = bar.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            bar[at..bar[at..].find('"').unwrap() + at].parse().unwrap()
        };
        let bars: Vec<&str> = svg.split("<rect class=\"lockbar").skip(1).collect();
        let (p2, p3) = (bars[1], bars[2]);
        // p3 is sealed after p2 and expires long after it.
        assert!(attr(p3, "x") > attr(p2, "x"));
        assert!(attr(p3, "x") + attr(p3, "width") > attr(p2, "x") + attr(p2, "width"));
        for b in bars {
            assert!(attr(b, "width") >= 2.0 && attr(b, "x") >= LABEL && attr(b, "x") <= W);
        }
    }

    #[test]
    fn no_sealed_file_means_no_timeline() {
        assert!(timeline(&Report::default()).is_none());
    }

    #[test]
    fn locked_columns_per_date_and_the_cap_line_when_in_range() {
        let now = 20_000 * DAY;
        let mut sp = Space {
            locked: vec![
                LockedDay {
                    until_unix: now + 3 * DAY,
                    files: 2,
                    logical_bytes: 10 << 20,
                    physical_bytes: 8 << 20,
                },
                LockedDay {
                    until_unix: now + 40 * DAY,
                    files: 1,
                    logical_bytes: 4 << 20,
                    physical_bytes: 3 << 20,
                },
            ],
            locked_cap_bytes: Some(16 << 20),
            ..Space::default()
        };
        let svg = locked_by_date(&sp, now).unwrap();
        assert_eq!(svg.matches("<rect class=\"lockcol\"").count(), 2);
        assert!(svg.contains("cap 16.0 MiB"));
        sp.locked_cap_bytes = Some(1 << 40);
        assert!(!locked_by_date(&sp, now).unwrap().contains("class=\"cap\""));
        sp.locked.clear();
        assert!(locked_by_date(&sp, now).is_none());
    }

    #[test]
    fn space_bars_show_each_figure_in_human_units() {
        let sp = Space {
            filesystem: "xfs".into(),
            fs_total_bytes: 100 << 30,
            fs_free_bytes: 60 << 30,
            logical_bytes: 30 << 30,
            allocated_bytes: 30 << 30,
            physical_bytes: 12 << 30,
            shared_bytes: 18 << 30,
            ..Space::default()
        };
        let svg = space_bars(&sp);
        for t in [
            "30.0 GiB",
            "12.0 GiB",
            "18.0 GiB",
            "free 60.0 GiB of 100.0 GiB",
        ] {
            assert!(svg.contains(t), "{t}");
        }
        assert!(svg.contains("other 28.0 GiB"));
    }
}
