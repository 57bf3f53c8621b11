//! Headless Chromium (Debian's `chromium`) for the tests of the report page and the
//! dashboard: the DOM after the page's scripts ran, the network log of the load, and
//! screenshots. Every Chromium is started in its own process group and killed with it when it
//! ends, times out, or the test panics.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::PATH_ENV;
use crate::fs::Scratch;

/// How long one Chromium run may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(90);

/// A Chromium binary.
pub struct Chromium {
    bin: PathBuf,
}

/// What one `--dump-dom` load gave.
pub struct Load {
    /// The DOM after the page's scripts ran.
    pub dom: String,
    /// Chromium's network log of the load (JSON, `--log-net-log`).
    pub net_log: String,
}

/// The Chromium binary; `None` after a printed `SKIP <test>: …`.
pub fn require_chromium(test: &str) -> Option<Chromium> {
    match which("chromium") {
        Some(bin) => Some(Chromium { bin }),
        None => {
            crate::skip::skip(
                test,
                "needs headless Chromium: apt-get install chromium (.ci/run installs it)",
            );
            None
        }
    }
}

/// `name` in one of the folders of the standard PATH.
fn which(name: &str) -> Option<PathBuf> {
    PATH_ENV
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A child process group killed on drop.
struct Group(Child);

impl Group {
    fn wait(&mut self, what: &str) -> std::process::ExitStatus {
        let end = Instant::now() + TIMEOUT;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < end, "{what} took over {TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The whole group: Chromium's renderer and GPU helpers too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

impl Chromium {
    fn command(&self, profile: &Path, offline: bool, tz: Option<&str>) -> Command {
        let mut c = if offline {
            // A new network namespace: only a down loopback, no route anywhere.
            let mut c = Command::new("unshare");
            c.arg("--net").arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--hide-scrollbars",
            // No name resolves but the loopback address: Chromium's own background requests
            // (component updates, network time) never leave the machine.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .process_group(0);
        if let Some(tz) = tz {
            c.env("TZ", tz);
        }
        c
    }

    /// Loads `url` and returns its DOM and network log. `offline` runs Chromium in a network
    /// namespace of its own (root only), so nothing outside could be reached even if asked;
    /// `tz` is the viewer's time zone.
    pub fn dump_dom(&self, url: &str, offline: bool, tz: Option<&str>) -> Load {
        let scratch = Scratch::new("bwchromium");
        let net_log = scratch.path().join("net-log.json");
        let out = scratch.path().join("dom.html");
        let mut c = self.command(&scratch.path().join("profile"), offline, tz);
        c.arg(format!("--log-net-log={}", net_log.display()))
            .arg("--dump-dom")
            .arg(url)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null());
        let mut g = Group(c.spawn().expect("starting chromium"));
        let st = g.wait("chromium --dump-dom");
        assert!(st.success(), "chromium --dump-dom {url} failed: {st}");
        drop(g);
        Load {
            dom: std::fs::read_to_string(&out).unwrap(),
            net_log: std::fs::read_to_string(&net_log).unwrap_or_default(),
        }
    }

    /// A screenshot of `url` at `width`×`height` CSS pixels, saved as PNG at `out`.
    pub fn screenshot(&self, url: &str, width: u32, height: u32, out: &Path) {
        let scratch = Scratch::new("bwchromium");
        let offline = crate::skip::is_root() && url.starts_with("file:");
        let mut c = self.command(&scratch.path().join("profile"), offline, None);
        c.arg(format!("--screenshot={}", out.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut g = Group(c.spawn().expect("starting chromium"));
        let st = g.wait("chromium --screenshot");
        assert!(st.success(), "chromium --screenshot {url} failed: {st}");
        assert!(
            out.exists(),
            "chromium wrote no screenshot {}",
            out.display()
        );
    }
}

/// The requests a page made, as (url, initiator), from Chromium's network log: every URL
/// request whose initiator is an origin (`null` for a `file:` page), leaving out the
/// browser's own background requests (initiator "not an origin").
pub fn page_requests(net_log: &str) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(net_log) else {
        panic!("the network log is not JSON");
    };
    let start = v["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_i64()
        .expect("URL_REQUEST_START_JOB in the network log's constants");
    let mut out = Vec::new();
    for e in v["events"].as_array().into_iter().flatten() {
        if e["type"].as_i64() != Some(start) {
            continue;
        }
        let p = &e["params"];
        let (Some(url), initiator) = (p["url"].as_str(), p["initiator"].as_str()) else {
            continue;
        };
        if initiator != Some("not an origin") {
            out.push((url.to_string(), initiator.unwrap_or("").to_string()));
        }
    }
    out
}

/// Every `http://` or `https://` URL in a network log or page other than those starting with
/// one of `allowed` (the page's own origin) and the SVG namespace name, which is not a
/// request.
pub fn foreign_urls(text: &str, allowed: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for scheme in ["http://", "https://"] {
        for (i, _) in text.match_indices(scheme) {
            let url: String = text[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '<' | '>' | ')'))
                .collect();
            if url.starts_with("http://www.w3.org/2000/svg")
                || allowed.iter().any(|a| url.starts_with(a))
            {
                continue;
            }
            out.push(url);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Where tests keep what a person may want to look at afterwards (screenshots):
/// `target/test-artefacts/<what>`.
pub fn artefacts_dir(what: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artefacts").join(what);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_urls_skip_the_svg_namespace_and_the_pages_own_origin() {
        let t = r#"<svg xmlns="http://www.w3.org/2000/svg"><a href="https://cdn.example/x.js">
            "url":"http://127.0.0.1:8080/"  "url":"http://evil.test/a)" "#;
        assert_eq!(
            foreign_urls(t, &["http://127.0.0.1:8080/"]),
            ["http://evil.test/a", "https://cdn.example/x.js"]
        );
    }
}
