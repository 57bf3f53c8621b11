//! Stopping the repository service (SIGTERM, as `systemctl stop` / `restart` sends): it takes
//! no new connection, lets the backup in progress finish and keep its restore point, then
//! exits 0; when nothing runs it exits at once.

use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_testkit::serve::Service;
use bulwark_testkit::{need_root, Rng};

fn terminate(svc: &Service) {
    let pid = svc.server.as_ref().unwrap().id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits up to `secs` for the service to exit; its exit status.
fn exited_within(svc: &mut Service, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = svc.server.as_mut().unwrap().try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn incoming_files(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("incoming")).unwrap().count()
}

#[test]
fn a_stopping_service_lets_the_running_backup_finish_and_takes_no_new_connection() {
    need_root!("a_stopping_service_lets_the_running_backup_finish_and_takes_no_new_connection");
    let mut svc = Service::start(&[]);
    svc.enroll("alice");
    // Random data compressed at level 19 on one thread: several seconds to send.
    let img = svc.path("disk.img");
    std::fs::write(&img, Rng::new(7).bytes(32 << 20)).unwrap();
    let backup = svc
        .bulwark("alice")
        .command(&[
            "--json",
            "backup",
            "--repo",
            &svc.addr,
            "--job",
            "db",
            "--compression",
            "19",
            "--threads",
            "1",
            img.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while incoming_files(&svc.repo) == 0 {
        assert!(
            Instant::now() < deadline,
            "the backup never reached the service"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    terminate(&svc);
    // Still serving the backup, but no longer accepting.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        svc.server.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the service quit with a backup running"
    );
    let late = svc.bulwark("alice").run(&["list", "--repo", &svc.addr]);
    assert!(
        !late.status.success(),
        "a connection after the stop was served"
    );
    let o = backup.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the backup in progress was cut: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let point = report["point"].as_str().unwrap().to_string();
    let st = exited_within(&mut svc, 20).expect("the service did not exit after its last session");
    assert!(st.success(), "{st}");
    assert!(
        svc.log_text().contains("stopping: no new connections"),
        "{}",
        svc.log_text()
    );
    // The point is in the repository, sealed in place.
    let files = bulwark_testkit::fs::files_under(&svc.repo.join("store/db"));
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains(&point)),
        "{point} not in {files:?}"
    );
    assert_eq!(incoming_files(&svc.repo), 0);
}

#[test]
fn an_idle_service_exits_at_once_on_sigterm() {
    need_root!("an_idle_service_exits_at_once_on_sigterm");
    let mut svc = Service::start(&[]);
    let t = Instant::now();
    terminate(&svc);
    let st = exited_within(&mut svc, 10).expect("an idle service did not exit");
    assert!(st.success(), "{st}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
