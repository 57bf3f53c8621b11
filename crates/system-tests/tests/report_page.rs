//! `bulwark-repo report --html` on a guarded repository, rendered by headless Chromium: the
//! lock timeline has one bar per sealed file with the dates of the immutability service's
//! ledger, alerts staged for real (a wall-clock jump of bulwark-immutd under libfaketime, a
//! flipped byte in a stored block) appear, the page requests nothing (Chromium's network log,
//! a load with no network at all), and screenshots at 1280×800 and 390×844 are saved under
//! target/test-artefacts/report/. Root only; skipped elsewhere.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use bulwark_testkit::chromium::{
    artefacts_dir, foreign_urls, page_requests, require_chromium, Chromium,
};
use bulwark_testkit::guarded::*;
use bulwark_testkit::system::{
    flip_a_stored_byte, guarded_on_wall_clock, unlocks_frozen_within, DAY,
};

/// ISO 8601 UTC, as the page's `data-sealed` / `data-expiry` and `<time datetime>` carry it.
fn iso(secs: i64) -> String {
    bulwark_time::UnixTime(secs).zulu().replacen(' ', "T", 1)
}

/// The `lockbar` rectangles of the DOM, each as its attributes.
fn bars(dom: &str) -> Vec<BTreeMap<String, String>> {
    dom.split("<rect ")
        .skip(1)
        .filter_map(|r| {
            let tag = &r[..r.find('>')?];
            let attrs = attributes(tag);
            attrs
                .get("class")
                .is_some_and(|c| c.split(' ').any(|w| w == "lockbar"))
                .then_some(attrs)
        })
        .collect()
}

fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].rsplit(' ').next().unwrap_or("").to_string();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.insert(name, after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

/// A folder on the rig's filesystem that the service user may write the report into.
fn out_dir(sys: &System) -> PathBuf {
    let d = sys.rig.fs.mnt.join("reports");
    std::fs::create_dir_all(&d).unwrap();
    sys.user().chown(&d);
    d
}

fn report(sys: &System, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["report", &sys.repo, "--html", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    sys.repo_cmd(&args)
}

/// A PNG's width and height from its IHDR chunk, and whether it shows more than a blank page:
/// at least 8 colours and at least 2 % of its pixels unlike the most common one.
fn png_facts(path: &Path) -> (u32, u32, bool) {
    let dec = png::Decoder::new(File::open(path).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let mut counts: BTreeMap<&[u8], u64> = BTreeMap::new();
    for p in buf[..info.buffer_size()].chunks(px) {
        *counts.entry(p).or_default() += 1;
    }
    let total: u64 = counts.values().sum();
    let top = counts.values().max().copied().unwrap_or(0);
    let varied = counts.len() >= 8 && (total - top) * 50 >= total;
    (info.width, info.height, varied)
}

/// Screenshots at a desktop and a phone size, kept under target/test-artefacts/report/.
fn screenshots(chromium: &Chromium, url: &str, name: &str) {
    let dir = artefacts_dir("report");
    for (w, h) in [(1280, 800), (390, 844)] {
        let out = dir.join(format!("{name}-{w}x{h}.png"));
        let _ = std::fs::remove_file(&out);
        chromium.screenshot(url, w, h, &out);
        let (pw, ph, varied) = png_facts(&out);
        assert_eq!((pw, ph), (w, h), "{}", out.display());
        assert!(varied, "{} looks blank", out.display());
        eprintln!("screenshot: {}", out.display());
    }
}

#[test]
fn the_report_timeline_has_one_bar_per_sealed_file_with_the_ledgers_dates() {
    let test = "the_report_timeline_has_one_bar_per_sealed_file_with_the_ledgers_dates";
    let Some(chromium) = require_chromium(test) else {
        return;
    };
    let Some(sys) = System::guarded(
        test,
        &["mkfs.xfs", "useradd", "chattr", "unshare"],
        FsKind::Xfs,
    ) else {
        return;
    };
    let svc = sys.rig.start();
    let img = sys.image("d.img", &b"disk content ".repeat(200_000));
    for job in ["web-1", "web-1", "db-1"] {
        assert!(sys.backup(false, job, &img).status.success());
    }
    // A synthetic full starts a second chain of web-1 sharing the first chain's blocks.
    let o = sys.repo_cmd(&["synthesize", "--job", "web-1", &sys.repo]);
    assert!(o.status.success());
    assert!(sys.backup(false, "web-1", &img).status.success());

    let out = out_dir(&sys).join("report.html");
    let o = report(&sys, &out, &[]);
    assert!(o.status.code().is_some_and(|c| c <= 1), "report failed");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().next(),
        Some(out.to_str().unwrap()),
        "the report prints its path"
    );

    let ledger = svc.client().unwrap().list(&sys.rig.repo).unwrap();
    assert_eq!(ledger.len(), 5, "five sealed files");
    let url = format!("file://{}", out.display());
    let load = chromium.dump_dom(&url, true, None);
    let bars = bars(&load.dom);
    assert_eq!(bars.len(), ledger.len(), "one bar per sealed file");
    for e in &ledger {
        let point = e.point.to_hex();
        let mine: Vec<_> = bars
            .iter()
            .filter(|b| b.get("data-point") == Some(&point))
            .collect();
        assert_eq!(mine.len(), 1, "one bar for {point}");
        let b = mine[0];
        assert_eq!(b["data-sealed"], iso(e.sealed_unix), "{point}");
        assert_eq!(b["data-expiry"], iso(e.expiry_unix), "{point}");
        assert_eq!(b["data-job"], e.job);
        assert_eq!(b["data-chain"], e.chain.to_hex());
        assert!(e.expiry_unix >= e.sealed_unix + 7 * DAY);
    }
    // Two chains of web-1 and one of db-1, each its own group.
    assert_eq!(load.dom.matches("<g class=\"chain\"").count(), 3);
    assert!(load.dom.contains("class=\"today\""));
    assert!(load.dom.contains("Deletable within 7 days"));
    // Cloning shows: the synthetic full shares its blocks.
    let shared = load
        .dom
        .split("id=\"shared\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap();
    assert_ne!(shared, "0 B", "the synthetic full's shared blocks");
    // Nothing but the page itself was loaded, and the page names no other resource.
    assert_eq!(page_requests(&load.net_log), Vec::<(String, String)>::new());
    // The check sees a page that does load something.
    let control = out.with_file_name("control.html");
    std::fs::write(
        &control,
        "<html><body><img src=\"http://example.invalid/x.png\"></body></html>",
    )
    .unwrap();
    let seen = page_requests(
        &chromium
            .dump_dom(&format!("file://{}", control.display()), true, None)
            .net_log,
    );
    assert!(
        seen.iter()
            .any(|(u, _)| u == "http://example.invalid/x.png"),
        "{seen:?}"
    );
    assert_eq!(foreign_urls(&load.dom, &[]), Vec::<String>::new());
    for attr in [" src=\"", "<link", "url("] {
        assert!(!load.dom.contains(attr), "{attr} in the page");
    }
    // Dates in the viewer's time zone, UTC on hover; the file itself reads without script.
    let tokyo = chromium.dump_dom(&url, true, Some("Asia/Tokyo"));
    assert!(
        tokyo.dom.contains("GMT+9") || tokyo.dom.contains("JST"),
        "dates not shown in the viewer's time zone"
    );
    assert!(tokyo.dom.contains(" UTC\">"), "UTC on hover");
    // Without script the file shows each expiry in UTC inside its <time datetime>.
    let file = std::fs::read_to_string(&out).unwrap();
    for e in &ledger {
        let utc = bulwark_time::UnixTime(e.expiry_unix).utc_minutes();
        let el = format!(
            "<time datetime=\"{}\" title=\"{utc}\">{utc}</time>",
            iso(e.expiry_unix)
        );
        assert!(file.contains(&el), "{el}");
    }
    screenshots(&chromium, &url, "guarded");
    svc.stop();
}

#[test]
fn a_clock_freeze_and_a_flipped_byte_appear_as_alerts_on_the_report_page() {
    let test = "a_clock_freeze_and_a_flipped_byte_appear_as_alerts_on_the_report_page";
    let Some(chromium) = require_chromium(test) else {
        return;
    };
    let tools = ["mkfs.ext4", "useradd", "chattr", "unshare"];
    let Some((sys, clock, svc)) = guarded_on_wall_clock(test, &tools, FsKind::Ext4) else {
        return;
    };
    let img = sys.image("d.img", &b"disk content ".repeat(60_000));
    assert!(sys.backup(false, "vm-1", &img).status.success());
    let out = out_dir(&sys).join("alerts.html");
    let url = format!("file://{}", out.display());

    // Before: no clock alert, no damage.
    let o = report(&sys, &out, &["--verify", "--no-audit"]);
    assert_eq!(o.status.code(), Some(0), "a quiet repository");
    let before = chromium.dump_dom(&url, true, None).dom;
    assert!(before.contains("id=\"no-alerts\""), "no alerts before");
    assert!(before.contains("data-frozen=\"false\""));
    assert!(!before.contains("data-kind=\"damage\""));

    // The service's wall clock jumps three days ahead: it freezes every unlock.
    clock.jump(3 * DAY);
    assert!(unlocks_frozen_within(&svc, 10), "the jump was not detected");
    // And a byte of a stored block rots.
    let ledger = svc.client().unwrap().list(&sys.rig.repo).unwrap();
    let point = ledger[0].point.to_hex();
    flip_a_stored_byte(&ledger[0].sealed_path);

    let o = report(&sys, &out, &["--verify", "--no-audit"]);
    assert_eq!(o.status.code(), Some(1), "the page shows failing alerts");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("ALERT: unlocks are FROZEN"), "{stdout}");
    let dom = chromium.dump_dom(&url, true, None).dom;
    assert!(dom.contains("data-status=\"fail\""));
    assert!(
        dom.contains("data-frozen=\"true\""),
        "the clock state shows the freeze"
    );
    let alert_of = |kind: &str| -> Vec<String> {
        dom.split(&format!("data-kind=\"{kind}\""))
            .skip(1)
            .map(|s| s[..s.find("</li>").unwrap()].to_string())
            .collect()
    };
    let clock = alert_of("clock");
    assert_eq!(clock.len(), 1, "one clock alert");
    assert!(
        clock[0].contains("FROZEN") && clock[0].contains("fix the clock first"),
        "{}",
        clock[0]
    );
    let damage = alert_of("damage");
    assert!(
        damage
            .iter()
            .any(|d| d.contains(&point) && d.contains("vm-1")),
        "the damaged point {point} is named: {damage:?}"
    );
    assert!(dom.contains("DAMAGED: 1 restore point(s)"));
    screenshots(&chromium, &url, "alerts");
    svc.stop();
}
