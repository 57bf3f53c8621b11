//! Encrypted live sources over the network (issue 17, docs/encryption.md, docs/sources.md):
//! a qcow2 backed up with `--cbt --key` to a real `bulwark-repo serve` as an unprivileged
//! user over TLS. The incremental agrees on its encryption with the server and fetches the
//! parent's CBT record, reads only the dirty blocks, restores with the key exactly as
//! `qemu-img compare` sees the image, and the repository holds no plaintext. Needs root (the
//! service user) and qemu-utils with qemu-storage-daemon.

use std::path::{Path, PathBuf};

use bulwark_testkit::serve::Service;
use bulwark_testkit::{can_run, images};

const MIB: u64 = 1 << 20;
const MARKER: &[u8] = b"NETWORK-LIVE-PLAINTEXT-MARKER-93ab";
const PASS: &str = "live over the network";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The service with client `c1` enrolled, its symmetric key `sym.key` and the image
/// `vm.qcow2` ([`images::qcow2_with_marker`]), with the paths of the two; `None` (after a
/// printed SKIP) without root or the QEMU tools.
fn service(test: &str) -> Option<(Service, PathBuf, PathBuf)> {
    if !can_run(
        test,
        "creating the unprivileged service user",
        &["qemu-img", "qemu-io", "qemu-storage-daemon"],
    ) {
        return None;
    }
    let svc = Service::start(&[]);
    svc.enroll("c1");
    let key = svc.path("sym.key");
    assert!(svc
        .bulwark("c1")
        .passphrase(PASS)
        .run(&["key", "create", "--out", s(&key)])
        .status
        .success());
    let img = svc.path("vm.qcow2");
    images::qcow2_with_marker(&img, 29, MARKER);
    Some((svc, key, img))
}

#[test]
fn an_encrypted_cbt_incremental_over_the_network_reads_only_the_dirty_blocks_and_restores_with_the_key(
) {
    let t = "an_encrypted_cbt_incremental_over_the_network_reads_only_the_dirty_blocks_and_restores_with_the_key";
    let Some((svc, key, img)) = service(t) else {
        return;
    };
    let c1 = svc.bulwark("c1").passphrase(PASS);
    let backup = || c1.backup_json("vm", &img, &["--cbt", "--key", s(&key)]);
    let full = backup();
    assert_eq!(full["kind"], "full", "{full}");
    images::qemu_io(&img, &["write -P 9 2M 64k", "write -P 8 40M 64k"]);
    let r = backup();
    assert_eq!(r["kind"], "incremental", "{r}");
    assert_eq!(r["cbt"]["used"], true, "{r}");
    assert_eq!(r["bytes_read"], 2 * MIB, "{r}");
    assert_eq!(r["blocks_new"], 2, "{r}");
    let out = svc.path("restored.raw");
    let o = c1.restore("vm", &out, &[]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("encrypted"),
        "a restore without the key is refused"
    );
    assert!(c1.restore("vm", &out, &["--key", s(&key)]).status.success());
    images::qemu_compare_qcow2(&out, &img);
    // Without the key: refused with what to give, and the image's bitmaps are as they were.
    let before = images::qcow2_bitmaps(&img);
    let o = c1.backup("vm", &img, &["--cbt"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("is encrypted") && e.contains("--key"), "{e}");
    assert_eq!(images::qcow2_bitmaps(&img), before);
    bulwark_testkit::fs::assert_no_marker(&svc.repo, MARKER);
}

#[test]
fn a_network_job_file_with_a_key_backs_up_its_qcow2_live_with_cbt_encrypted() {
    let t = "a_network_job_file_with_a_key_backs_up_its_qcow2_live_with_cbt_encrypted";
    let Some((svc, key, img)) = service(t) else {
        return;
    };
    let c1 = svc.bulwark("c1").passphrase(PASS);
    let job = svc.path("vmjob.toml");
    let extra = format!("cbt = true\nkey = \"{}\"\n", s(&key));
    bulwark_testkit::system::job_file(&job, "vmjob", &img, &svc.addr, &extra);
    let state = svc.path("state");
    let job_run = || {
        let o = c1
            .command(&["job", "run", s(&job)])
            .env("BULWARK_STATE_DIR", &state)
            .output()
            .unwrap();
        let text = bulwark_testkit::text(&o);
        assert!(o.status.success(), "{text}");
        text
    };
    assert!(job_run().contains("full"));
    images::qemu_io(&img, &["write -P 6 2M 64k"]);
    let second = job_run();
    assert!(second.contains("incremental"), "{second}");
    // Read through QEMU with Bulwark's bitmaps: one per job, named after the newest point.
    let b = images::qcow2_bitmaps(&img);
    assert!(b.len() == 1 && b[0].starts_with("bulwark.vmjob."), "{b:?}");
    let out = svc.path("restored.raw");
    assert!(c1
        .restore("vmjob", &out, &["--key", s(&key)])
        .status
        .success());
    images::qemu_compare_qcow2(&out, &img);
}
