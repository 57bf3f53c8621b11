//! `bulwark dashboard` live against the real transport service (`bulwark-repo serve` as an
//! unprivileged user, TLS on 127.0.0.1) with two enrolled clients: the page, rendered by
//! headless Chromium, shows only the dashboard's own client's jobs, follows new backups,
//! loads nothing but itself, and the server answers only GET of its page. Root only (the
//! service user); skipped elsewhere.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use bulwark_testkit::chromium::{artefacts_dir, foreign_urls, page_requests, require_chromium};
use bulwark_testkit::need_root;
use bulwark_testkit::serve::Service;

/// `client` backs up `image` as `job`, which must succeed.
fn backup(svc: &Service, client: &str, job: &str, image: &Path) {
    assert!(svc.bulwark(client).backup(job, image, &[]).status.success());
}

/// A running `bulwark dashboard`, killed on drop.
struct Dashboard {
    child: Child,
    url: String,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dashboard(svc: &Service, client: &str, extra: &[&str]) -> Dashboard {
    let mut child = svc
        .bulwark(client)
        .command(&[
            "--json",
            "dashboard",
            "--repo",
            &svc.addr,
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = serde_json::from_str::<serde_json::Value>(&line)
        .unwrap_or_else(|_| panic!("dashboard said {line:?}"))["listening"]
        .as_str()
        .unwrap()
        .to_string();
    Dashboard { child, url }
}

/// One raw HTTP/1.1 exchange: the status code and the whole response.
fn http(url: &str, request: &str) -> (u16, String) {
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.replace("HOSTPORT", &hostport).as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    (code, out)
}

fn image(path: &Path, seed: u8) {
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    std::fs::write(path, data).unwrap();
}

/// A PNG's size, and whether it shows more than a blank page (at least 8 colours, at least
/// 2 % of the pixels unlike the most common one).
fn png_facts(path: &Path) -> (u32, u32, bool) {
    let mut r = png::Decoder::new(File::open(path).unwrap())
        .read_info()
        .unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    let mut counts: BTreeMap<&[u8], u64> = BTreeMap::new();
    for p in buf[..info.buffer_size()].chunks(info.color_type.samples()) {
        *counts.entry(p).or_default() += 1;
    }
    let total: u64 = counts.values().sum();
    let top = counts.values().max().copied().unwrap_or(0);
    (
        info.width,
        info.height,
        counts.len() >= 8 && (total - top) * 50 >= total,
    )
}

#[test]
fn the_live_dashboard_shows_only_its_clients_jobs_and_serves_nothing_but_its_page() {
    let test = "the_live_dashboard_shows_only_its_clients_jobs_and_serves_nothing_but_its_page";
    let Some(chromium) = require_chromium(test) else {
        return;
    };
    need_root!(test);
    let svc = Service::start(&[]);
    svc.enroll("alice");
    svc.enroll("bob");
    let img = svc.dir.path().join("d.img");
    image(&img, 1);
    backup(&svc, "alice", "alice-web", &img);
    image(&img, 2);
    backup(&svc, "alice", "alice-web", &img);
    backup(&svc, "bob", "bob-db", &img);

    // Anything but loopback needs the explicit flag, and says why.
    let o = svc.client(
        "alice",
        &["dashboard", "--repo", &svc.addr, "--listen", "0.0.0.0:0"],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--allow-remote-viewers") && err.contains("no login"),
        "{err}"
    );

    let dash = start_dashboard(&svc, "alice", &["--refresh", "10"]);
    let load = chromium.dump_dom(&dash.url, false, None);
    let dom = &load.dom;
    assert!(
        dom.contains("data-job=\"alice-web\""),
        "alice's job is shown"
    );
    assert!(!dom.contains("bob-db"), "bob's job must not be shown");
    assert!(dom.contains("client alice of"), "the page names its client");
    assert_eq!(
        dom.matches("<table class=\"points\">").count(),
        1,
        "one chain"
    );
    let rows = dom
        .split("<table class=\"points\">")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap()
        .matches("<tr>")
        .count();
    assert_eq!(rows, 1 + 2, "a header and alice's two restore points");
    assert!(dom.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    // No request but to the dashboard itself; no other URL in the page.
    let own = dash.url.trim_end_matches('/');
    let foreign: Vec<_> = page_requests(&load.net_log)
        .into_iter()
        .filter(|(u, _)| !u.starts_with(own))
        .collect();
    assert!(foreign.is_empty(), "{foreign:?}");
    assert_eq!(foreign_urls(dom, &[own]), Vec::<String>::new());

    // Live: a new backup shows on a later load (the dashboard asks the server at most every 5 s).
    image(&img, 3);
    backup(&svc, "alice", "alice-web", &img);
    std::thread::sleep(Duration::from_secs(6));
    let dom = chromium.dump_dom(&dash.url, false, None).dom;
    let rows = dom.split("<table class=\"points\">").nth(1).unwrap();
    assert_eq!(
        rows.split("</table>")
            .next()
            .unwrap()
            .matches("<tr>")
            .count(),
        4
    );

    // Read-only HTTP: GET (and HEAD) of the page only; the page may load nothing.
    let (code, resp) = http(
        &dash.url,
        "GET / HTTP/1.1\r\nHost: HOSTPORT\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    assert!(
        resp.contains("Content-Security-Policy: default-src 'none'"),
        "{resp}"
    );
    let (code, _) = http(
        &dash.url,
        "POST / HTTP/1.1\r\nHost: HOSTPORT\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(code, 405, "no write actions");
    let (code, _) = http(
        &dash.url,
        "GET / HTTP/1.1\r\nHost: HOSTPORT\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(code, 413, "a GET with a body");
    let (code, _) = http(
        &dash.url,
        "DELETE / HTTP/1.1\r\nHost: HOSTPORT\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405);
    let (code, _) = http(
        &dash.url,
        "GET /etc/passwd HTTP/1.1\r\nHost: HOSTPORT\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 404);
    let (code, _) = http(
        &dash.url,
        "GET / HTTP/1.1\r\nHost: rebound.example:80\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        code, 421,
        "a page re-bound to 127.0.0.1 under another name gets nothing"
    );
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: HOSTPORT\r\nConnection: close\r\n\r\n",
        "a".repeat(4000)
    );
    assert_eq!(http(&dash.url, &long).0, 414);

    let dir = artefacts_dir("dashboard");
    for (w, h) in [(1280, 800), (390, 844)] {
        let out = dir.join(format!("dashboard-{w}x{h}.png"));
        let _ = std::fs::remove_file(&out);
        chromium.screenshot(&dash.url, w, h, &out);
        let (pw, ph, varied) = png_facts(&out);
        assert_eq!((pw, ph), (w, h));
        assert!(varied, "{} looks blank", out.display());
    }
    drop(dash);
}
