//! Encryption over the network (issue 17, docs/encryption.md): real `bulwark-repo serve` as
//! an unprivileged user, real `bulwark` clients over TLS. A write-only client (public key
//! only) backs up a full and an incremental but cannot restore; the private restore key
//! restores; the repository never holds plaintext and verifies every stored byte without a
//! key; a symmetric client round-trips, and an unencrypted backup of its job is refused.
//! Needs root (the service user); prints why it skips otherwise.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use bulwark_testkit::need_root;
use bulwark_testkit::serve::Service;
use bulwark_testkit::{system, Rng};

const MARKER: &[u8] = b"NETWORK-PLAINTEXT-MARKER-51c2";

/// The passphrase of every key these tests create.
const PASS: &str = "correct horse battery";

fn image(path: &Path, seed: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(&Rng::new(seed).bytes(1 << 20), 0).unwrap();
    let text: Vec<u8> = MARKER.iter().copied().cycle().take(1 << 20).collect();
    f.write_all_at(&text, 3 << 20).unwrap();
}

fn change(path: &Path, seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&Rng::new(seed).bytes(10_000), 6 << 20)
        .unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_write_only_client_backs_up_over_tls_but_only_the_private_restore_key_restores() {
    need_root!("a_write_only_client_backs_up_over_tls_but_only_the_private_restore_key_restores");
    let svc = Service::start(&[]);
    svc.enroll("alice");
    let (alice, alice_pw) = (svc.bulwark("alice"), svc.bulwark("alice").passphrase(PASS));
    let (private, public) = (svc.path("restore.key"), svc.path("client.pub"));
    let o = alice_pw.run(&bulwark_testkit::keys::write_only_args(
        s(&private),
        s(&public),
    ));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("losing every copy"),
        "the first key create warns: {}",
        stderr(&o)
    );
    let img = svc.path("disk.img");
    image(&img, 1);
    let first = std::fs::read(&img).unwrap();
    let full = alice.backup_json("vm", &img, &["--public-key", s(&public)]);
    assert_eq!(full["kind"], "full");
    change(&img, 2);
    let inc = alice.backup_json("vm", &img, &["--public-key", s(&public)]);
    assert_eq!(inc["kind"], "incremental");
    assert_eq!(inc["chain"], full["chain"]);
    assert!(inc["blocks_unchanged"].as_u64().unwrap() > 0, "{inc}");
    assert_eq!(inc["blocks_new"].as_u64().unwrap(), 1, "{inc}");
    // Without the private key the client cannot read its own backups.
    let out = svc.path("out.img");
    let o = alice.restore("vm", &out, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is encrypted") && stderr(&o).contains("--restore-key"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let o = alice_pw.restore("vm", &out, &["--key", s(&public)]);
    assert!(
        !o.status.success() && stderr(&o).contains("public key"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // With it: both points, byte for byte.
    let o = alice_pw.restore("vm", &out, &["--restore-key", s(&private)]);
    assert!(o.status.success());
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    std::fs::remove_file(&out).unwrap();
    let p = full["point"].as_str().unwrap();
    let o = alice_pw.restore("vm", &out, &["--point", p, "--restore-key", s(&private)]);
    assert!(o.status.success());
    assert!(std::fs::read(&out).unwrap() == first);
    // The repository holds no plaintext and verifies every stored byte without a key.
    bulwark_testkit::fs::assert_no_marker(&svc.repo, MARKER);
    let o = svc.admin(&["verify", s(&svc.repo)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let file = PathBuf::from(full["path"].as_str().map(String::from).unwrap_or_default());
    let file = if file.as_os_str().is_empty() {
        bulwark_testkit::fs::files_under(&svc.repo.join("store"))
            .into_iter()
            .find(|f| f.to_string_lossy().contains(p))
            .unwrap()
    } else {
        file
    };
    system::flip_byte(&file, 4096 + 100);
    let o = svc.admin(&["verify", s(&svc.repo)]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "verify finds the flipped ciphertext byte: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_symmetric_client_round_trips_over_tls_and_an_unencrypted_backup_of_its_job_is_refused() {
    need_root!(
        "a_symmetric_client_round_trips_over_tls_and_an_unencrypted_backup_of_its_job_is_refused"
    );
    let svc = Service::start(&[]);
    svc.enroll("bob");
    let bob_pw = svc.bulwark("bob").passphrase(PASS);
    let key = svc.path("bob.key");
    assert!(bob_pw
        .run(&["key", "create", "--out", s(&key)])
        .status
        .success());
    let img = svc.path("disk.img");
    image(&img, 3);
    bob_pw.backup_json("db", &img, &["--key", s(&key)]);
    change(&img, 4);
    let inc = bob_pw.backup_json("db", &img, &["--key", s(&key)]);
    assert_eq!(inc["kind"], "incremental");
    let out = svc.path("out.img");
    assert!(bob_pw
        .restore("db", &out, &["--key", s(&key)])
        .status
        .success());
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    bulwark_testkit::fs::assert_no_marker(&svc.repo, MARKER);
    // Never silently unencrypted: neither as an incremental nor as a new chain (a forced
    // full, another block size), and nothing reaches the repository.
    let points = || {
        std::fs::read_dir(svc.repo.join("store/db"))
            .unwrap()
            .count()
    };
    let chains = points();
    for extra in [&[][..], &["--full"][..], &["--block-size", "256K"][..]] {
        let o = svc.bulwark("bob").backup("db", &img, extra);
        assert!(!o.status.success(), "{extra:?}");
        assert!(
            stderr(&o).contains("is encrypted") && stderr(&o).contains("--key"),
            "{extra:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(points(), chains, "a refused backup started no chain");
    bulwark_testkit::fs::assert_no_marker(&svc.repo, MARKER);
    // A wrong passphrase says so and sends nothing.
    let o = svc
        .bulwark("bob")
        .passphrase("wrong")
        .backup("db", &img, &["--key", s(&key)]);
    assert!(
        !o.status.success() && stderr(&o).contains("wrong passphrase"),
        "{}",
        stderr(&o)
    );
}
