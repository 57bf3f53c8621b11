//! `bulwark dashboard` live against the real transport service (`bulwark-repo serve` as an
//! unprivileged user, TLS on 127.0.0.1) with two enrolled clients: the page, rendered by
//! headless Chromium, shows only the dashboard's own client's jobs, follows new backups,
//! loads nothing but itself, and the server answers only GET of its page. Root only (the
//! service user); skipped elsewhere.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bulwark_testkit::chromium::{artefacts_dir, foreign_urls, page_requests, require_chromium};
use bulwark_testkit::{expect_binary, require_root, show, TestUser};

/// A repository owned by a fresh service user, and its running transport service.
struct Service {
    server: Option<Child>,
    addr: String,
    fp: String,
    repo: PathBuf,
    dir: tempfile::TempDir,
    user: TestUser,
}

impl Service {
    fn start() -> Service {
        let user = TestUser::create();
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = dir.path().join("srv");
        std::fs::create_dir(&base).unwrap();
        std::os::unix::fs::chown(&base, Some(user.uid), Some(user.gid)).unwrap();
        let mut svc = Service {
            server: None,
            addr: String::new(),
            fp: String::new(),
            repo: base.join("repo"),
            dir,
            user,
        };
        let o = svc.admin(&["--json", "init", svc.repo.to_str().unwrap()]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        svc.fp = v["fingerprint"].as_str().unwrap().to_string();
        let mut child = Command::new(expect_binary("bulwark-repo"))
            .args([
                "serve",
                svc.repo.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .uid(svc.user.uid)
            .gid(svc.user.gid)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        svc.server = Some(child);
        svc.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve said {line:?}"))
            .to_string();
        svc
    }

    fn admin(&self, args: &[&str]) -> Output {
        let o = Command::new(expect_binary("bulwark-repo"))
            .args(args)
            .uid(self.user.uid)
            .gid(self.user.gid)
            .output()
            .unwrap();
        show(&format!("bulwark-repo {}", args.join(" ")), &o);
        o
    }

    fn config(&self, client: &str) -> PathBuf {
        self.dir.path().join(format!("client-{client}"))
    }

    fn client(&self, client: &str, args: &[&str]) -> Output {
        let o = Command::new(expect_binary("bulwark"))
            .arg("--config-dir")
            .arg(self.config(client))
            .args(args)
            .output()
            .unwrap();
        show(&format!("[{client}] bulwark {}", args.join(" ")), &o);
        o
    }

    fn enroll(&self, client: &str) {
        let o = self.admin(&[
            "--json",
            "enroll",
            self.repo.to_str().unwrap(),
            "--client",
            client,
            "--expires",
            "10m",
        ]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let token = v["token"].as_str().unwrap();
        let o = self.client(
            client,
            &["enroll", &self.addr, token, "--fingerprint", &self.fp],
        );
        assert!(o.status.success());
    }

    fn backup(&self, client: &str, job: &str, image: &Path) {
        let o = self.client(
            client,
            &[
                "backup",
                "--repo",
                &self.addr,
                "--job",
                job,
                image.to_str().unwrap(),
            ],
        );
        assert!(o.status.success());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
    let mut child = Command::new(expect_binary("bulwark"))
        .arg("--config-dir")
        .arg(svc.config(client))
        .args([
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
    if !require_root(test, "creating the unprivileged service user") {
        return;
    }
    let svc = Service::start();
    svc.enroll("alice");
    svc.enroll("bob");
    let img = svc.dir.path().join("d.img");
    image(&img, 1);
    svc.backup("alice", "alice-web", &img);
    image(&img, 2);
    svc.backup("alice", "alice-web", &img);
    svc.backup("bob", "bob-db", &img);

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
    svc.backup("alice", "alice-web", &img);
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
