//! `bulwark dashboard` of a client of a guarded repository: the real transport service
//! (`bulwark-repo serve` as the service user) and a real `bulwark-immutd` whose wall clock is
//! moved under libfaketime. Rendered by headless Chromium, the live page's lock timeline has
//! one bar per sealed file of the client's job with the ledger's dates (through ListLocks),
//! and a clock freeze of the service shows as an alert on the next load. Root only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bulwark_testkit::chromium::require_chromium;
use bulwark_testkit::guarded::*;
use bulwark_testkit::system::{
    enrollment, guarded_on_wall_clock, listening_addr, unlocks_frozen_within, DAY,
};

/// A child killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the first line of the child's standard output.
fn first_line(c: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

fn iso(secs: i64) -> String {
    bulwark_time::UnixTime(secs).zulu().replacen(' ', "T", 1)
}

#[test]
fn the_dashboard_of_a_guarded_repository_shows_the_ledgers_locks_and_a_clock_freeze() {
    let test = "the_dashboard_of_a_guarded_repository_shows_the_ledgers_locks_and_a_clock_freeze";
    let Some(chromium) = require_chromium(test) else {
        return;
    };
    let tools = ["mkfs.ext4", "useradd", "chattr"];
    let Some((sys, clock, svc)) = guarded_on_wall_clock(test, &tools, FsKind::Ext4) else {
        return;
    };
    let mut serve = sys
        .user()
        .cmd(&sys.repo_bin)
        .args(["serve", &sys.repo, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut serve, None);
    let _serve = Killed(serve);

    // Two clients: the dashboard is alice's.
    let conf = sys.rig.fs.mnt.join("clients");
    std::fs::create_dir(&conf).unwrap();
    let img = sys.image("d.img", &b"disk content ".repeat(80_000));
    for client in ["alice", "bob"] {
        let v = enrollment(sys.user(), &sys.repo_bin, &sys.repo, client);
        let dir = conf.join(client);
        let o = Command::new(&sys.bulwark)
            .arg("--config-dir")
            .arg(&dir)
            .args(["enroll", &addr, v["token"].as_str().unwrap()])
            .args(["--fingerprint", v["fingerprint"].as_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for _ in 0..if client == "alice" { 2 } else { 1 } {
            let o = Command::new(&sys.bulwark)
                .arg("--config-dir")
                .arg(&dir)
                .args(["backup", "--repo", &addr, "--job", &format!("{client}-vm")])
                .arg(&img)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let mut dash = Command::new(&sys.bulwark)
        .arg("--config-dir")
        .arg(conf.join("alice"))
        .args([
            "--json",
            "dashboard",
            "--repo",
            &addr,
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--refresh", "5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut dash);
    let _dash = Killed(dash);
    let url = serde_json::from_str::<serde_json::Value>(&line).unwrap()["listening"]
        .as_str()
        .unwrap()
        .to_string();

    let ledger: Vec<_> = svc
        .client()
        .unwrap()
        .list(&sys.rig.repo)
        .unwrap()
        .into_iter()
        .filter(|e| e.job == "alice-vm")
        .collect();
    assert_eq!(ledger.len(), 2);
    let dom = chromium.dump_dom(&url, false, None).dom;
    assert_eq!(
        dom.matches("class=\"lockbar").count(),
        ledger.len(),
        "one bar per sealed file of alice's job"
    );
    for e in &ledger {
        let needle = format!(
            "data-point=\"{}\" data-class=\"regular\" data-sealed=\"{}\" data-expiry=\"{}\"",
            e.point.to_hex(),
            iso(e.sealed_unix),
            iso(e.expiry_unix)
        );
        assert!(dom.contains(&needle), "{needle}");
        assert!(e.expiry_unix >= e.sealed_unix + 7 * DAY);
    }
    assert!(!dom.contains("bob-vm"), "bob's job is not shown");
    assert!(dom.contains("data-frozen=\"false\""));
    assert!(!dom.contains("data-kind=\"clock\""));

    // The service's wall clock jumps three days: the next load (the dashboard asks the
    // server at most every 5 s) shows the freeze.
    clock.jump(3 * DAY);
    assert!(unlocks_frozen_within(&svc, 10), "the jump was not detected");
    std::thread::sleep(Duration::from_secs(6));
    let dom = chromium.dump_dom(&url, false, None).dom;
    assert!(
        dom.contains("data-frozen=\"true\""),
        "the clock state shows the freeze"
    );
    let alert = dom
        .split("data-kind=\"clock\"")
        .nth(1)
        .map(|s| s[..s.find("</li>").unwrap()].to_string())
        .expect("a clock alert");
    assert!(alert.contains("FROZEN"), "{alert}");
    assert!(dom.contains("data-status=\"fail\""));
    svc.stop();
}
