//! The whole page: header and status, alerts, the lock timeline, space, jobs and their
//! chains, the host audit.

use std::fmt::Write;

use crate::chart;
use crate::html::{escape, human_bytes, human_duration, short_id, table, time};
use crate::{Level, Report, Verify};

const CSS: &str = r#"
:root{--fg:#1d2430;--muted:#5b6575;--bg:#f5f7fa;--card:#fff;--line:#dde2ea;--ok:#1f8a4c;--warn:#b86e00;--fail:#c62828;
--regular:#4a7bd0;--weekly:#2e9d8f;--monthly:#8a5cc7;--yearly:#d0702c}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{background:#18202c;color:#fff;padding:18px 24px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600;word-break:break-all}
header .sub{color:#b9c3d3;font-size:13px}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:600;font-size:13px;margin-right:8px}
.badge.ok{background:var(--ok)}.badge.warn{background:var(--warn)}.badge.fail{background:var(--fail)}
nav{display:flex;flex-wrap:wrap;gap:14px;padding:8px 24px;background:#222c3a}
nav a{color:#cfe0ff;text-decoration:none;font-size:14px}
main{max-width:1240px;margin:0 auto;padding:16px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 18px;margin:0 0 16px}
h2{font-size:18px;margin:0 0 10px}h3{font-size:16px;margin:14px 0 6px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:12px;margin:0 0 16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .v{font-size:22px;font-weight:600}.card .k{color:var(--muted);font-size:13px}
.alerts{list-style:none;margin:0;padding:0}
.alert{border-left:6px solid var(--warn);background:#fff7e8;padding:8px 12px;margin:0 0 8px;border-radius:4px}
.alert.level-fail{border-color:var(--fail);background:#fdecec}
.alert .kind{font-weight:600;text-transform:uppercase;font-size:12px;margin-right:8px}
.quiet{color:var(--ok);font-weight:600}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--muted);font-weight:600}
td.detail{white-space:normal;min-width:240px}
.id{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:13px}
.lvl-PASS{color:var(--ok);font-weight:600}.lvl-WARN{color:var(--warn);font-weight:600}.lvl-FAIL{color:var(--fail);font-weight:600}
.chart{overflow-x:auto}
svg{display:block;width:100%;height:auto;font-family:inherit}
svg.timeline{min-width:760px}
svg.space,svg.locked{min-width:620px}
svg text{font-size:11px;fill:var(--fg)}
svg .tick{stroke:var(--line)}svg .tick-label{fill:var(--muted);font-size:10px}
svg .chain-label{font-weight:600;font-size:12px}svg .point-label{fill:var(--muted);font-size:10px}
svg .today{stroke:var(--fail);stroke-width:2}svg .today-label{fill:var(--fail);font-weight:600}
svg .horizon{stroke:var(--warn);stroke-dasharray:4 3}svg .horizon-label{fill:var(--warn)}
svg .horizon-band{fill:#fff3dc}
svg .lockbar.gfs-regular{fill:var(--regular)}svg .lockbar.gfs-weekly{fill:var(--weekly)}
svg .lockbar.gfs-monthly{fill:var(--monthly)}svg .lockbar.gfs-yearly{fill:var(--yearly)}
svg .lockbar.expired{opacity:.35}
svg .sp-logical{fill:#8aa4cf}svg .sp-allocated{fill:#6b87b8}svg .sp-physical{fill:#2e5aa8}svg .sp-shared{fill:#2e9d8f}
svg .fs-points{fill:#2e5aa8}svg .fs-other{fill:#a9b3c2}svg .fs-free{fill:#e6ebf2}
svg .lockcol{fill:var(--monthly)}svg .baseline{stroke:var(--muted)}svg .cap{stroke:var(--fail);stroke-dasharray:6 3}
svg .cap-label{fill:var(--fail)}svg .bar-value{fill:var(--muted)}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:13px;margin:6px 0}
.legend span::before{content:"";display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px;background:var(--c)}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:16px}
dl.figs{display:grid;grid-template-columns:auto 1fr;gap:2px 14px;margin:0 0 10px}dl.figs dt{color:var(--muted)}dl.figs dd{margin:0}
.note{color:var(--muted);font-size:13px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:10px 16px 24px}
@media (max-width:600px){header{padding:14px}nav{padding:8px 14px}main{padding:8px}section{padding:10px 12px}
.card .v{font-size:19px}.cards{grid-template-columns:repeat(2,1fr)}}
@media print{nav{display:none}section{break-inside:avoid}}
"#;

/// Rewrites every `<time datetime>` in the viewer's time zone; UTC stays in the hover text.
/// Progressive enhancement only: without it the page shows the same dates in UTC.
const SCRIPT: &str = r#"(function(){var o={year:"numeric",month:"2-digit",day:"2-digit",hour:"2-digit",minute:"2-digit",timeZoneName:"short"};
document.querySelectorAll("time[datetime]").forEach(function(t){var d=new Date(t.getAttribute("datetime"));
if(!isNaN(d.getTime())){t.textContent=d.toLocaleString(undefined,o);}});
var z=document.getElementById("tz");if(z){z.textContent="Dates are in your time zone; hover a date for UTC.";}})();"#;

fn level_class(l: Level) -> &'static str {
    match l {
        Level::Ok => "ok",
        Level::Warn => "warn",
        Level::Fail => "fail",
    }
}

/// Renders the report as one self-contained HTML page.
pub fn render(r: &Report) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let worst = r.worst();
    let levels = r
        .alerts
        .iter()
        .map(|a| a.level)
        .chain(r.audit.iter().map(|f| f.level));
    let (fails, warns) = levels.fold((0, 0), |(f, w), l| match l {
        Level::Fail => (f + 1, w),
        Level::Warn => (f, w + 1),
        Level::Ok => (f, w),
    });
    let plural = |n: usize, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    let badge = match (fails, warns) {
        (0, 0) => "all well".to_string(),
        (0, w) => plural(w, "warning"),
        (f, 0) => plural(f, "problem"),
        (f, w) => format!("{}, {}", plural(f, "problem"), plural(w, "warning")),
    };
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(secs) = r.refresh_secs {
        let _ = write!(s, "<meta http-equiv=\"refresh\" content=\"{secs}\">");
    }
    let _ = write!(
        s,
        "<title>Bulwark · {}</title><style>{CSS}</style></head>",
        escape(&r.title)
    );
    let _ = write!(
        s,
        "<body data-generated=\"{}\" data-status=\"{}\"><header><h1>Bulwark · {}</h1><div class=\"sub\">\
         <span class=\"badge {}\" id=\"status\">{}</span>{} · generated {}{}</div></header>",
        crate::iso_utc(r.generated_unix),
        level_class(worst),
        escape(&r.title),
        level_class(worst),
        badge,
        escape(&r.source),
        time(r.generated_unix),
        r.refresh_secs
            .map(|s| format!(" · refreshes every {}", human_duration(i64::from(s))))
            .unwrap_or_default(),
    );
    s.push_str(
        "<nav><a href=\"#alerts\">Alerts</a><a href=\"#timeline\">Lock timeline</a><a href=\"#space\">Space</a>\
         <a href=\"#jobs\">Jobs</a><a href=\"#audit\">Host audit</a></nav><main>",
    );
    cards(&mut s, r);
    alerts(&mut s, r);
    timeline(&mut s, r);
    space(&mut s, r);
    jobs(&mut s, r);
    audit(&mut s, r);
    if !r.notes.is_empty() {
        s.push_str("<section id=\"notes\"><h2>About this page</h2><ul>");
        for n in &r.notes {
            let _ = write!(s, "<li class=\"note\">{}</li>", escape(n));
        }
        s.push_str("</ul></section>");
    }
    let _ = writeln!(
        s,
        "</main><footer><span id=\"tz\">Dates are in UTC.</span> Sizes in binary units (1 GiB = 1024³ bytes). \
         This page loads nothing from anywhere.</footer><script>{SCRIPT}</script></body></html>"
    );
    s
}

fn cards(s: &mut String, r: &Report) {
    let points: usize = r
        .jobs
        .iter()
        .flat_map(|j| &j.chains)
        .map(|c| c.points.len())
        .sum();
    let chains: usize = r.jobs.iter().map(|j| j.chains.len()).sum();
    let sealed = r.sealed().count();
    s.push_str("<div class=\"cards\">");
    let mut card = |k: &str, v: String, id: &str| {
        let _ = write!(
            s,
            "<div class=\"card\" id=\"card-{id}\"><div class=\"v\">{v}</div><div class=\"k\">{}</div></div>",
            escape(k)
        );
    };
    card("jobs", r.jobs.len().to_string(), "jobs");
    card("chains", chains.to_string(), "chains");
    card("restore points", points.to_string(), "points");
    card("sealed files", sealed.to_string(), "sealed");
    if let Some(sp) = &r.space {
        card(
            "saved by block cloning",
            human_bytes(sp.allocated_bytes.saturating_sub(sp.physical_bytes)),
            "saved",
        );
        if let Some(b) = sp.locked_now_bytes {
            card("locked now", human_bytes(b), "locked");
        }
        card(
            "free on the filesystem",
            human_bytes(sp.fs_free_bytes),
            "free",
        );
    }
    card(
        "deletable within 7 days",
        r.deletable_within(7).len().to_string(),
        "del7",
    );
    card(
        "deletable within 30 days",
        r.deletable_within(30).len().to_string(),
        "del30",
    );
    if let Some(days) = r.immutable_days {
        card("immutability period", format!("{days} d"), "period");
    }
    s.push_str("</div>");
}

fn alerts(s: &mut String, r: &Report) {
    s.push_str("<section id=\"alerts\"><h2>Alerts</h2>");
    if let Some(c) = &r.clock {
        let state = if c.unlocks_frozen {
            "<strong class=\"lvl-FAIL\">unlocks FROZEN</strong>"
        } else if !c.alert.is_empty() {
            "<strong class=\"lvl-WARN\">clock alert</strong>"
        } else {
            "<strong class=\"lvl-PASS\">trusted clock in step</strong>"
        };
        let _ = write!(
            s,
            "<p id=\"clock\" data-frozen=\"{}\">Immutability service: {state}; trusted time {}, its wall clock {} (difference {}).</p>",
            c.unlocks_frozen,
            time(c.trusted_unix),
            time(c.wall_unix),
            human_duration(c.wall_unix - c.trusted_unix)
        );
    }
    if r.alerts.is_empty() {
        s.push_str("<p class=\"quiet\" id=\"no-alerts\">No alerts.</p>");
    } else {
        s.push_str("<ul class=\"alerts\">");
        for a in &r.alerts {
            let _ = write!(
                s,
                "<li class=\"alert level-{}\" data-kind=\"{}\"><span class=\"kind\">{}</span>{}</li>",
                level_class(a.level),
                escape(&a.kind),
                escape(&a.kind),
                escape(&a.text)
            );
        }
        s.push_str("</ul>");
    }
    s.push_str("</section>");
}

fn timeline(s: &mut String, r: &Report) {
    s.push_str("<section id=\"timeline\"><h2>Lock timeline</h2>");
    match chart::timeline(r) {
        None => s.push_str("<p class=\"note\">No sealed file is known to this page.</p>"),
        Some(svg) => {
            s.push_str(
                "<p class=\"note\">Every sealed file as a bar from its seal to the end of its protection (the immutability service's ledger), grouped by chain. \
                 The red line is now; the shaded band the next 30 days. Axis dates in UTC.</p>\
                 <div class=\"legend\"><span style=\"--c:var(--regular)\">regular</span><span style=\"--c:var(--weekly)\">weekly</span>\
                 <span style=\"--c:var(--monthly)\">monthly</span><span style=\"--c:var(--yearly)\">yearly</span></div>",
            );
            let _ = write!(s, "<div class=\"chart\">{svg}</div>");
        }
    }
    s.push_str("<div class=\"cols\">");
    for days in [7, 30] {
        let d = r.deletable_within(days);
        let _ = write!(
            s,
            "<div id=\"deletable-{days}\"><h3>Deletable within {days} days: {}</h3>",
            d.len()
        );
        if d.is_empty() {
            s.push_str("<p class=\"note\">Nothing.</p>");
        } else {
            let rows: Vec<Vec<String>> = d
                .iter()
                .map(|d| {
                    vec![
                        escape(d.job),
                        short_id(&d.point.id),
                        escape(&d.point.kind),
                        human_bytes(d.point.file_bytes),
                        time(d.expiry_unix),
                    ]
                })
                .collect();
            s.push_str(&table(
                "deletable",
                &["job", "point", "kind", "size", "protected until"],
                &rows,
            ));
        }
        s.push_str("</div>");
    }
    s.push_str("</div></section>");
}

fn space(s: &mut String, r: &Report) {
    s.push_str("<section id=\"space\"><h2>Space</h2>");
    let Some(sp) = &r.space else {
        s.push_str("<p class=\"note\">Space figures are measured on the repository host (<code>bulwark-repo report</code>).</p></section>");
        return;
    };
    let _ = write!(
        s,
        "<dl class=\"figs\"><dt>logical</dt><dd id=\"logical\">{}</dd><dt>allocated (du)</dt><dd>{}</dd>\
         <dt>physical</dt><dd id=\"physical\">{}</dd><dt>shared by cloning</dt><dd id=\"shared\">{}</dd>\
         <dt>saved by cloning</dt><dd>{}</dd><dt>filesystem</dt><dd>{}: {} free of {}</dd>",
        human_bytes(sp.logical_bytes),
        human_bytes(sp.allocated_bytes),
        human_bytes(sp.physical_bytes),
        human_bytes(sp.shared_bytes),
        human_bytes(sp.allocated_bytes.saturating_sub(sp.physical_bytes)),
        escape(&sp.filesystem),
        human_bytes(sp.fs_free_bytes),
        human_bytes(sp.fs_total_bytes),
    );
    match (sp.locked_now_bytes, sp.locked_cap_bytes) {
        (Some(now), Some(cap)) => {
            let _ = write!(
                s,
                "<dt>locked now</dt><dd id=\"locked-now\">{} of the cap {} ({:.0} %)</dd>",
                human_bytes(now),
                human_bytes(cap),
                now as f64 / cap.max(1) as f64 * 100.0
            );
        }
        (Some(now), None) => {
            let _ = write!(
                s,
                "<dt>locked now</dt><dd id=\"locked-now\">{} (the cap is set in bulwark-immutd's configuration, max_locked_bytes)</dd>",
                human_bytes(now)
            );
        }
        _ => {}
    }
    s.push_str("</dl>");
    let _ = write!(s, "<div class=\"chart\">{}</div>", chart::space_bars(sp));
    s.push_str("<h3>Bytes locked until each date</h3>");
    match chart::locked_by_date(sp, r.generated_unix) {
        None => s.push_str("<p class=\"note\">Nothing is locked.</p>"),
        Some(svg) => {
            let _ = write!(s, "<div class=\"chart\">{svg}</div>");
            let rows: Vec<Vec<String>> = sp
                .locked
                .iter()
                .map(|d| {
                    vec![
                        time(d.until_unix),
                        d.files.to_string(),
                        human_bytes(d.logical_bytes),
                        human_bytes(d.physical_bytes),
                    ]
                })
                .collect();
            s.push_str(&table(
                "locked",
                &[
                    "locked until",
                    "files",
                    "logical",
                    "physical, not freeable before",
                ],
                &rows,
            ));
        }
    }
    s.push_str("</section>");
}

fn verify_text(v: &Verify, now: i64) -> String {
    match v {
        Verify::Unknown => "<span class=\"note\">not verified by this report</span>".into(),
        Verify::Clean { at_unix } => format!(
            "<span class=\"lvl-PASS\">verified clean</span> {} ({} ago)",
            time(*at_unix),
            human_duration(now - at_unix)
        ),
        Verify::Damaged { at_unix, points } => format!(
            "<span class=\"lvl-FAIL\">DAMAGED: {points} restore point(s)</span>{}",
            at_unix
                .map(|t| format!(" found {} ({} ago)", time(t), human_duration(now - t)))
                .unwrap_or_default()
        ),
    }
}

fn jobs(s: &mut String, r: &Report) {
    s.push_str("<section id=\"jobs\"><h2>Jobs, chains and restore points</h2>");
    if r.jobs.is_empty() {
        s.push_str("<p class=\"note\">No job has a restore point yet.</p>");
    }
    for j in &r.jobs {
        let _ = write!(
            s,
            "<div class=\"job\" data-job=\"{}\"><h3>{}</h3><p>{}</p>",
            escape(&j.name),
            escape(&j.name),
            verify_text(&j.verify, r.generated_unix)
        );
        for c in &j.chains {
            let _ = write!(
                s,
                "<p class=\"note\">chain {} · {} restore point(s)</p>",
                short_id(&c.id),
                c.points.len()
            );
            let rows: Vec<Vec<String>> = c
                .points
                .iter()
                .map(|p| {
                    let lock = match &p.lock {
                        Some(l) => format!("{} ({})", time(l.expiry_unix), escape(&l.state)),
                        None => "<span class=\"lvl-WARN\">not in the ledger</span>".into(),
                    };
                    vec![
                        short_id(&p.id),
                        escape(&p.kind),
                        escape(p.class.as_str()),
                        time(p.created_unix),
                        human_bytes(p.disk_bytes),
                        human_bytes(p.file_bytes),
                        human_bytes(p.new_bytes),
                        lock,
                        match (p.damaged, p.verified_unix) {
                            (true, _) => "<span class=\"lvl-FAIL\">damaged</span>".into(),
                            (false, Some(t)) => {
                                format!("verified {} ago", human_duration(r.generated_unix - t))
                            }
                            (false, None) => String::new(),
                        },
                    ]
                })
                .collect();
            s.push_str(&table(
                "points",
                &[
                    "point",
                    "kind",
                    "class",
                    "created",
                    "disk",
                    "file",
                    "new data",
                    "protected until",
                    "health",
                ],
                &rows,
            ));
        }
        s.push_str("</div>");
    }
    s.push_str("</section>");
}

fn audit(s: &mut String, r: &Report) {
    s.push_str("<section id=\"audit\"><h2>Host audit</h2>");
    if r.audit.is_empty() {
        s.push_str("<p class=\"note\">The host audit runs on the repository host (<code>bulwark-repo report</code>, <code>bulwark-repo audit</code>).</p>");
    } else {
        let rows: Vec<Vec<String>> = r
            .audit
            .iter()
            .map(|f| {
                vec![
                    format!("<span class=\"lvl-{0}\">{0}</span>", f.level.as_str()),
                    escape(&f.check),
                    format!("{}", escape(&f.detail)),
                ]
            })
            .collect();
        let mut t = table("audit", &["result", "check", "detail"], &rows);
        // The detail column wraps.
        t = t.replace(
            "<td><span class=\"lvl",
            "<td class=\"lvl-cell\"><span class=\"lvl",
        );
        s.push_str(&t);
    }
    s.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Alert, AuditFinding, Chain, Clock, Gfs, Job, Lock, Point, Space, DAY};

    fn sample() -> Report {
        let now = 20_400 * DAY + 3600;
        Report {
            title: "/srv/<repo>".into(),
            source: "bulwark-repo report on \"host\"".into(),
            generated_unix: now,
            immutable_days: Some(14),
            jobs: vec![Job {
                name: "vm-1".into(),
                chains: vec![Chain {
                    id: "0123456789abcdef0123456789abcdef".into(),
                    points: vec![
                        Point {
                            id: "aa11".into(),
                            kind: "full".into(),
                            class: Gfs::Weekly,
                            created_unix: now - 3 * DAY,
                            disk_bytes: 1 << 30,
                            file_bytes: 300 << 20,
                            new_bytes: 290 << 20,
                            lock: Some(Lock {
                                sealed_unix: now - 3 * DAY,
                                expiry_unix: now + 5 * DAY,
                                state: "immutable".into(),
                            }),
                            damaged: true,
                            verified_unix: None,
                        },
                        Point {
                            id: "bb22".into(),
                            kind: "incremental".into(),
                            created_unix: now - DAY,
                            verified_unix: Some(now - 2 * DAY),
                            ..Point::default()
                        },
                    ],
                }],
                verify: Verify::Damaged {
                    at_unix: Some(now - 600),
                    points: 1,
                },
            }],
            space: Some(Space {
                filesystem: "xfs".into(),
                fs_total_bytes: 10 << 30,
                fs_free_bytes: 6 << 30,
                logical_bytes: 600 << 20,
                allocated_bytes: 600 << 20,
                physical_bytes: 310 << 20,
                shared_bytes: 290 << 20,
                locked_now_bytes: Some(300 << 20),
                ..Space::default()
            }),
            clock: Some(Clock {
                trusted_unix: now - 3 * DAY,
                wall_unix: now,
                unlocks_frozen: true,
                alert: "wall clock jumped".into(),
            }),
            alerts: vec![Alert {
                level: Level::Fail,
                kind: "clock".into(),
                text: "unlocks are FROZEN <b>".into(),
            }],
            audit: vec![AuditFinding {
                level: Level::Warn,
                check: "ssh".into(),
                detail: "sshd listens & more".into(),
            }],
            refresh_secs: Some(30),
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_every_string() {
        let page = render(&sample());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.ends_with("</html>\n"));
        for bad in ["<b>", "/srv/<repo>", "\"host\"", "& more"] {
            assert!(!page.contains(bad), "unescaped {bad}");
        }
        assert!(page.contains("/srv/&lt;repo&gt;") && page.contains("sshd listens &amp; more"));
        // Nothing is loaded: no src attribute, no link element, no url().
        for needle in [" src=", "<link", "url(", "@import", "http://", "https://"] {
            let hits: Vec<_> = page.match_indices(needle).collect();
            // The SVG namespace is an identifier, not a request.
            let real = hits
                .iter()
                .filter(|(i, _)| !page[*i..].starts_with("http://www.w3.org/2000/svg"))
                .count();
            assert_eq!(real, 0, "{needle} in the page");
        }
    }

    #[test]
    fn the_page_shows_alerts_clock_damage_and_the_audit() {
        let page = render(&sample());
        assert!(page.contains("data-status=\"fail\""));
        assert!(page.contains("1 problem, 1 warning"));
        assert!(page.contains("data-kind=\"clock\""));
        assert!(page.contains("unlocks FROZEN"));
        assert!(page.contains("data-frozen=\"true\""));
        assert!(page.contains("DAMAGED: 1 restore point(s)"));
        assert!(page.contains(">damaged<"));
        assert!(page.contains("verified 2 d ago"));
        assert!(page.contains("not in the ledger"));
        assert!(page.contains("lvl-WARN\">WARN<"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        assert!(page.contains("Deletable within 7 days: 1"));
        assert!(page.contains("300.0 MiB"));
        assert!(page.contains("saved by block cloning"));
    }

    #[test]
    fn a_quiet_repository_says_all_well_and_a_file_has_no_refresh() {
        let mut r = sample();
        r.alerts.clear();
        r.audit.clear();
        r.clock = None;
        r.refresh_secs = None;
        let page = render(&r);
        assert!(page.contains("data-status=\"ok\"") && page.contains("all well"));
        r.audit.push(AuditFinding {
            level: Level::Warn,
            check: "clock".into(),
            detail: "not synchronized".into(),
        });
        let page = render(&r);
        assert!(page.contains("data-status=\"warn\"") && page.contains(">1 warning<"));
        assert!(page.contains("No alerts."));
        assert!(!page.contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn every_date_is_utc_text_in_a_time_element() {
        let page = render(&sample());
        let times = page.matches("<time datetime=\"").count();
        assert!(times >= 6, "{times}");
        assert_eq!(times, page.matches("</time>").count());
        assert!(page.contains(" UTC\">"));
    }
}

#[cfg(test)]
mod scale {
    use super::*;
    use crate::{Chain, Gfs, Job, Lock, Point, DAY};

    /// 100 jobs × 10 chains × 10 sealed files: one bar each, every date in a `<time>`.
    #[test]
    fn ten_thousand_sealed_files_render_one_bar_each() {
        let now = 20_400 * DAY;
        let jobs = (0..100)
            .map(|j| Job {
                name: format!("vm-{j}"),
                chains: (0..10)
                    .map(|c| Chain {
                        id: format!("{j:04}{c:04}"),
                        points: (0..10)
                            .map(|p| Point {
                                id: format!("{j:04}{c:04}{p:04}"),
                                kind: "incremental".into(),
                                class: if p == 0 { Gfs::Weekly } else { Gfs::Regular },
                                created_unix: now - (100 - c * 10 - p) * DAY,
                                lock: Some(Lock {
                                    sealed_unix: now - (100 - c * 10 - p) * DAY,
                                    expiry_unix: now + (c * 10) * DAY,
                                    state: "locked".into(),
                                }),
                                ..Point::default()
                            })
                            .collect(),
                    })
                    .collect(),
                ..Job::default()
            })
            .collect();
        let r = Report {
            generated_unix: now,
            jobs,
            ..Report::default()
        };
        let t = std::time::Instant::now();
        let page = render(&r);
        eprintln!(
            "rendered 10 000 sealed files: {} bytes in {:?}",
            page.len(),
            t.elapsed()
        );
        assert_eq!(page.matches("<rect class=\"lockbar").count(), 10_000);
        assert!(page.len() < 64 << 20);
    }
}
