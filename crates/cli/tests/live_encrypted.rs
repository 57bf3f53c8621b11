//! Encrypted backups of live sources (issue 17, docs/encryption.md, docs/sources.md) with
//! real QEMU tools: a qcow2 backed up with `--cbt` and a symmetric key or a write-only public
//! key, the incremental reading only the dirty blocks; restores compared with the image by
//! `qemu-img compare`; no plaintext in the repository; a job file's `key` for a live disk; an
//! encrypted job refused without its key; verify-by-reading on an encrypted chain; a running
//! disk under qemu-storage-daemon fleeced through QMP while its guest writes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bulwark_testkit::images::{qcow2_bitmap, qemu_compare_qcow2};
use bulwark_testkit::require_tools;
use bulwark_testkit::run_ok;
use bulwark_testkit::vm::{apply, nbd_uri, prefix_of, qemu_nbd, Guest, Vm, SLOT};
use common::{bulwark_pass, create_write_only_key, err, init_repo, ok, s};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const MARKER: &[u8] = b"LIVE-PLAINTEXT-MARKER-7d3e";
/// The passphrase of every key these tests create.
const PASS: &str = "live disks stay secret";

/// A scratch folder, a repository in it, a symmetric key, and a 64 MiB qcow2 holding 6 MiB
/// of random data and 1 MiB of a plaintext marker; `None` (after a printed SKIP) without
/// qemu-img, qemu-io and qemu-storage-daemon (`--cbt`).
struct Rig {
    dir: tempfile::TempDir,
    repo: PathBuf,
    img: PathBuf,
    key: PathBuf,
}

fn rig(test: &str) -> Option<Rig> {
    if !require_tools(test, &["qemu-img", "qemu-io", "qemu-storage-daemon"]) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path());
    let img = dir.path().join("vm.qcow2");
    bulwark_testkit::images::qcow2_with_marker(&img, 17, MARKER);
    let key = dir.path().join("sym.key");
    ok(&bulwark_pass(
        &["key", "create", "--out", s(&key)],
        Some(PASS),
        None,
    ));
    Some(Rig {
        dir,
        repo,
        img,
        key,
    })
}

impl Rig {
    /// `bulwark --json backup` of the image as `job` with `extra`.
    fn try_backup(&self, job: &str, extra: &[&str]) -> Output {
        self.try_backup_from(s(&self.img), job, extra)
    }

    /// `bulwark --json backup` of `source` as `job` with `extra`.
    fn try_backup_from(&self, source: &str, job: &str, extra: &[&str]) -> Output {
        let mut a = vec!["backup", "--json", "--repo", s(&self.repo), "--job", job];
        a.push(source);
        a.extend_from_slice(extra);
        bulwark_pass(&a, Some(PASS), None)
    }

    /// [`Rig::try_backup_from`], which must succeed; its report.
    fn backup_from(&self, source: &str, job: &str, extra: &[&str]) -> Value {
        ok_report(&self.try_backup_from(source, job, extra), 0)
    }

    /// [`Rig::try_backup`], which must end with `code`; its report.
    fn backup_exits(&self, job: &str, extra: &[&str], code: i32) -> Value {
        ok_report(&self.try_backup(job, extra), code)
    }

    /// [`Rig::try_backup`], which must succeed; its report.
    fn backup(&self, job: &str, extra: &[&str]) -> Value {
        self.backup_exits(job, extra, 0)
    }

    /// `bulwark restore` of `job`'s newest point with `extra` (the key options).
    fn restore(&self, job: &str, extra: &[&str]) -> (Output, PathBuf) {
        let out = self.dir.path().join("restored.raw");
        let _ = std::fs::remove_file(&out);
        let mut a = vec!["restore", "--repo", s(&self.repo), "--job", job];
        a.extend_from_slice(extra);
        a.push(s(&out));
        (bulwark_pass(&a, Some(PASS), None), out)
    }

    /// Restores `job`'s newest point with `extra`, which must give the disk inside the image
    /// as it is now (`qemu-img compare`).
    fn restores_as_the_image(&self, job: &str, extra: &[&str]) {
        let (o, out) = self.restore(job, extra);
        ok(&o);
        qemu_compare_qcow2(&out, &self.img);
    }

    /// Writes 64 KiB of `pattern` at each of `offsets` into the image.
    fn write(&self, offsets: &[u64], pattern: u8) {
        bulwark_testkit::images::qcow2_write_64k(&self.img, offsets, pattern);
    }

    /// The image's persistent dirty bitmaps.
    fn bitmaps(&self) -> Vec<String> {
        bulwark_testkit::images::qcow2_bitmaps(&self.img)
    }

    /// Every file of the repository with its length and content hash (what "nothing was
    /// written" compares).
    fn repo_state(&self) -> Vec<(PathBuf, blake3::Hash)> {
        bulwark_testkit::fs::files_under(&self.repo)
            .into_iter()
            .map(|p| {
                let h = blake3::hash(&std::fs::read(&p).unwrap());
                (p, h)
            })
            .collect()
    }

    /// Asserts that restoring `job` without a key is refused, says it is encrypted and names
    /// `wants` (the option to give), and writes nothing.
    fn restore_without_a_key_is_refused(&self, job: &str, wants: &str) {
        let (o, out) = self.restore(job, &[]);
        let e = err(&o);
        assert!(
            e.contains("is encrypted") && e.contains(wants),
            "a restore without the key says which key it needs ({wants}): {e}"
        );
        assert!(!out.exists(), "nothing was written");
    }

    /// No file of the repository holds the image's plaintext marker.
    fn assert_no_plaintext(&self) {
        bulwark_testkit::fs::assert_no_marker(&self.repo, MARKER);
    }
}

/// The JSON report of a backup that ended with `code`.
fn ok_report(o: &Output, code: i32) -> Value {
    assert_eq!(o.status.code(), Some(code), "{}", bulwark_testkit::text(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The incremental after writes at 2M and 40M: two whole 1 MiB blocks read, and only they.
fn assert_read_only_the_dirty_blocks(r: &Value) {
    assert_eq!(r["kind"], "incremental", "{r}");
    assert_eq!(r["cbt"]["used"], true, "{r}");
    assert_eq!(r["bytes_read"], 2 * MIB, "{r}");
    assert_eq!(r["blocks_new"], 2, "{r}");
}

#[test]
fn an_encrypted_cbt_incremental_of_a_qcow2_reads_only_the_dirty_blocks_and_stores_no_plaintext() {
    let t = "an_encrypted_cbt_incremental_of_a_qcow2_reads_only_the_dirty_blocks_and_stores_no_plaintext";
    let Some(rig) = rig(t) else { return };
    let key = s(&rig.key);
    let full = rig.backup("vm", &["--cbt", "--key", key]);
    assert_eq!(full["kind"], "full", "{full}");
    assert_eq!(full["cbt"]["mode"], "managed", "{full}");
    rig.restores_as_the_image("vm", &["--key", key]);
    rig.write(&[2 * MIB, 40 * MIB], 9);
    let inc = rig.backup("vm", &["--cbt", "--key", key]);
    assert_read_only_the_dirty_blocks(&inc);
    rig.restores_as_the_image("vm", &["--key", key]);
    // Every point carries both records, in tag order: the CBT record, then the encryption
    // record (critical).
    let repo = bulwark_repository::Repository::open(&rig.repo).unwrap();
    let points = repo.scan_job("vm").unwrap().points;
    assert_eq!(points.len(), 2);
    for p in points {
        let tags: Vec<u16> = p.meta.extensions.iter().map(|e| e.tag).collect();
        assert_eq!(
            tags,
            [
                bulwark_format::EXT_CBT_SOURCE,
                bulwark_format::EXT_ENCRYPTION
            ]
        );
    }
    rig.restore_without_a_key_is_refused("vm", "--key");
    rig.assert_no_plaintext();
}

#[test]
fn a_write_only_client_backs_up_a_live_disk_that_only_the_private_restore_key_restores() {
    let t = "a_write_only_client_backs_up_a_live_disk_that_only_the_private_restore_key_restores";
    let Some(rig) = rig(t) else { return };
    let (private, public) = (
        rig.dir.path().join("restore.key"),
        rig.dir.path().join("client.pub"),
    );
    create_write_only_key(&private, &public, PASS);
    let full = rig.backup("wo", &["--cbt", "--public-key", s(&public)]);
    assert_eq!(full["kind"], "full", "{full}");
    rig.write(&[2 * MIB, 40 * MIB], 5);
    let inc = rig.backup("wo", &["--cbt", "--public-key", s(&public)]);
    assert_read_only_the_dirty_blocks(&inc);
    rig.restore_without_a_key_is_refused("wo", "--restore-key");
    rig.restores_as_the_image("wo", &["--restore-key", s(&private)]);
    rig.assert_no_plaintext();
}

#[test]
fn a_job_file_key_encrypts_a_live_disk_and_the_job_is_then_refused_without_its_key() {
    let t = "a_job_file_key_encrypts_a_live_disk_and_the_job_is_then_refused_without_its_key";
    let Some(rig) = rig(t) else { return };
    let state = rig.dir.path().join("state");
    let job_file = |name: &str, key: Option<&Path>| {
        let f = rig.dir.path().join(name);
        let mut extra = String::from("cbt = true\n");
        if let Some(k) = key {
            extra.push_str(&format!("key = \"{}\"\n", s(k)));
        }
        bulwark_testkit::system::job_file(&f, "vmj", &rig.img, &rig.repo, &extra);
        f
    };
    let job_run = |file: &Path| {
        Command::new(common::bin())
            .args(["job", "run", s(file)])
            .env("BULWARK_STATE_DIR", &state)
            .env("BULWARK_PASSPHRASE", PASS)
            .output()
            .unwrap()
    };
    let keyed = job_file("keyed.toml", Some(&rig.key));
    let first = ok(&job_run(&keyed));
    assert!(first.contains("full"), "{first}");
    rig.write(&[2 * MIB, 40 * MIB], 7);
    let second = ok(&job_run(&keyed));
    assert!(second.contains("incremental"), "{second}");
    rig.restores_as_the_image("vmj", &["--key", s(&rig.key)]);
    rig.assert_no_plaintext();

    // Without the key: refused, with what to give, and nothing written (neither in the
    // repository nor in the image's bitmaps).
    rig.write(&[5 * MIB], 8);
    let (files, bitmaps) = (rig.repo_state(), rig.bitmaps());
    let o = rig.try_backup("vmj", &["--cbt"]);
    assert_eq!(o.status.code(), Some(2), "{}", bulwark_testkit::text(&o));
    let e = err(&o);
    assert!(
        e.contains("is encrypted") && e.contains("--key KEYFILE") && e.contains("refused"),
        "{e}"
    );
    let o = job_run(&job_file("plain.toml", None));
    assert!(!o.status.success(), "{}", bulwark_testkit::text(&o));
    let text = bulwark_testkit::text(&o);
    assert!(text.contains("is encrypted"), "{text}");
    assert!(rig.repo_state() == files, "a refused backup wrote nothing");
    assert_eq!(rig.bitmaps(), bitmaps, "a refused backup left the bitmaps");
}

#[test]
fn verify_by_reading_on_an_encrypted_chain_compares_keyed_hashes_and_still_finds_misses() {
    let t = "verify_by_reading_on_an_encrypted_chain_compares_keyed_hashes_and_still_finds_misses";
    let Some(rig) = rig(t) else { return };
    let key = s(&rig.key);
    let verify = ["--cbt", "--cbt-verify-every", "1", "--key", key];
    rig.backup("vm", &verify);
    rig.write(&[2 * MIB, 40 * MIB], 3);
    let r = rig.backup("vm", &verify);
    assert_eq!(r["kind"], "incremental", "{r}");
    assert_eq!(r["cbt"]["used"], false, "verify reads the whole disk: {r}");
    assert_eq!(r["cbt"]["verify"]["missed_blocks"], 0, "{r}");
    // The unchanged blocks matched the parent's keyed hashes: only the written ones are new.
    assert_eq!(r["blocks_new"], 2, "{r}");
    assert!(r["blocks_unchanged"].as_u64().unwrap() >= 6, "{r}");
    rig.restores_as_the_image("vm", &["--key", key]);
    // A write the bitmap does not see is still found.
    let name = rig.bitmaps().pop().unwrap();
    qcow2_bitmap(&rig.img, &["--disable"], &name);
    rig.write(&[3 * MIB], 0x21);
    qcow2_bitmap(&rig.img, &["--enable"], &name);
    rig.write(&[5 * MIB], 0x22);
    let r = rig.backup_exits("vm", &verify, 1);
    assert_eq!(r["cbt"]["verify"]["missed"], serde_json::json!([3]), "{r}");
    rig.restores_as_the_image("vm", &["--key", key]);
}

#[test]
fn an_owners_dirty_bitmap_is_checked_against_the_keyed_hash_of_an_encrypted_parent() {
    let t = "an_owners_dirty_bitmap_is_checked_against_the_keyed_hash_of_an_encrypted_parent";
    if !require_tools(t, &["qemu-nbd"]) {
        return;
    }
    let Some(rig) = rig(t) else { return };
    qcow2_bitmap(&rig.img, &["--add"], "b0");
    let sock = rig.dir.path().join("nbd.sock");
    let uri = nbd_uri(&sock);
    let key = s(&rig.key);
    let backup = || {
        let _nbd = qemu_nbd(&rig.img, "b0", &sock);
        rig.backup_from(&uri, "nbd", &["--dirty-bitmap", "b0", "--key", key])
    };
    let full = backup();
    assert_eq!(full["kind"], "full", "{full}");
    rig.write(&[2 * MIB, 40 * MIB], 4);
    let r = backup();
    assert_eq!(r["kind"], "incremental", "{r}");
    // The anchor block matched the parent's keyed hash, so the bitmap was trusted.
    assert_eq!(r["cbt"]["used"], true, "{r}");
    assert!(r["cbt"]["anchor_block"].is_u64(), "{r}");
    assert_eq!(
        r["bytes_read"].as_u64().unwrap(),
        2 * MIB + r["cbt"]["anchor_bytes"].as_u64().unwrap(),
        "{r}"
    );
    rig.restores_as_the_image("nbd", &["--key", key]);
    rig.assert_no_plaintext();
}

#[test]
fn a_plain_live_chain_continues_encrypted_only_through_a_new_full_and_a_wrong_key_is_refused() {
    let t =
        "a_plain_live_chain_continues_encrypted_only_through_a_new_full_and_a_wrong_key_is_refused";
    let Some(rig) = rig(t) else { return };
    let key = s(&rig.key);
    assert_eq!(rig.backup("vm", &["--cbt"])["kind"], "full");
    rig.write(&[2 * MIB], 1);
    let r = rig.backup("vm", &["--cbt", "--key", key]);
    assert_eq!(r["kind"], "full", "{r}");
    let why = r["full_reason"].as_str().unwrap_or_default();
    assert!(why.contains("not encrypted"), "{r}");
    rig.write(&[2 * MIB, 40 * MIB], 2);
    assert_read_only_the_dirty_blocks(&rig.backup("vm", &["--cbt", "--key", key]));
    rig.restores_as_the_image("vm", &["--key", key]);
    // Another symmetric key: refused before anything is read or written.
    let other = rig.dir.path().join("other.key");
    ok(&bulwark_pass(
        &["key", "create", "--out", s(&other)],
        Some(PASS),
        None,
    ));
    rig.write(&[5 * MIB], 3);
    let (files, bitmaps) = (rig.repo_state(), rig.bitmaps());
    let e = err(&rig.try_backup("vm", &["--cbt", "--key", s(&other)]));
    assert!(
        e.contains("wrong key") && e.contains("nothing was written"),
        "{e}"
    );
    assert!(rig.repo_state() == files, "a refused backup wrote nothing");
    assert_eq!(rig.bitmaps(), bitmaps, "a refused backup left the bitmaps");
}

#[test]
fn an_encrypted_backup_of_a_running_disk_is_the_disk_at_the_transaction_and_restores_only_with_the_key(
) {
    let t = "an_encrypted_backup_of_a_running_disk_is_the_disk_at_the_transaction_and_restores_only_with_the_key";
    if !require_tools(t, &["qemu-nbd"]) {
        return;
    }
    let Some(rig) = rig(t) else { return };
    let base = rig.dir.path().join("base.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-U", "-O", "raw"])
            .arg(&rig.img)
            .arg(&base),
    );
    let mut disk = std::fs::read(&base).unwrap();
    let vm = Vm::start(rig.dir.path(), &rig.img);
    let (qmp, nbd, key) = (s(&vm.qmp), s(&vm.nbd), s(&rig.key));
    let live = [
        "--qmp",
        qmp,
        "--node",
        "disk",
        "--nbd-socket",
        nbd,
        "--cbt",
        "--key",
        key,
    ];
    // The guest writes the first 8 MiB only: the marker at 8 MiB stays in every point.
    let slots = 8 * MIB / SLOT;
    let marker_at = 8 * MIB as usize..8 * MIB as usize + MARKER.len();
    assert_eq!(&disk[marker_at.clone()], MARKER);
    for round in 0..2u64 {
        let guest = Guest::start(&vm, round, slots, 20);
        let r = rig.backup_from("vm-disk", "vm", &live);
        let before_end = guest.writes();
        std::thread::sleep(Duration::from_millis(50));
        let log = guest.stop();
        assert_eq!(r["kind"], ["full", "incremental"][round as usize], "{r}");
        if round > 0 {
            assert_eq!(r["cbt"]["used"], true, "{r}");
            let read = r["bytes_read"].as_u64().unwrap();
            assert!(read <= 8 * MIB, "only what the guest wrote is read: {r}");
        }
        let (o, out) = rig.restore("vm", &["--key", key]);
        ok(&o);
        let got = std::fs::read(&out).unwrap();
        let seen = prefix_of(&disk, &got, round, &log);
        assert!(seen >= 20, "writes before the transaction are in the point");
        assert!(
            seen < before_end,
            "writes after the transaction are not ({seen} of {before_end})"
        );
        assert_eq!(
            &got[marker_at.clone()],
            MARKER,
            "the point holds the marker"
        );
        apply(&mut disk, round, &log);
    }
    // Both points are encrypted.
    let repo = bulwark_repository::Repository::open(&rig.repo).unwrap();
    let points = repo.scan_job("vm").unwrap().points;
    assert_eq!(points.len(), 2);
    for p in points {
        assert!(
            p.meta
                .extensions
                .iter()
                .any(|e| e.tag == bulwark_format::EXT_ENCRYPTION),
            "{:?}",
            p.meta.extensions
        );
    }
    rig.restore_without_a_key_is_refused("vm", "--key");
    rig.assert_no_plaintext();
    vm.assert_only_one_bitmap_left();
}

#[test]
fn synthetic_full_after_an_encrypted_cbt_incremental_restores_with_the_key_and_the_next_backup_reads_the_disk(
) {
    let t = "synthetic_full_after_an_encrypted_cbt_incremental_restores_with_the_key_and_the_next_backup_reads_the_disk";
    let Some(rig) = rig(t) else { return };
    let key = ["--cbt", "--key", s(&rig.key)];
    let full = rig.backup("vm", &key);
    assert_eq!(full["kind"], "full", "{full}");
    rig.write(&[2 * MIB, 40 * MIB], 3);
    let inc = rig.backup("vm", &[&key[..], &["--synthetic-full"]].concat());
    assert_read_only_the_dirty_blocks(&inc);
    let synth = &inc["synthetic_full"];
    assert!(
        synth["point"].is_string(),
        "a synthetic full was built: {inc}"
    );
    assert_ne!(synth["point"], inc["point"]);
    // The newest point is now the synthetic full: byte-identical with the key, refused without.
    rig.restores_as_the_image("vm", &["--key", s(&rig.key)]);
    rig.restore_without_a_key_is_refused("vm", "--key");
    // A synthetic full carries no CBT record: the next backup reads the disk again (and says
    // why), and is still right.
    rig.write(&[10 * MIB], 4);
    let next = rig.backup("vm", &key);
    assert_eq!(next["cbt"]["used"], false, "{next}");
    assert!(next["cbt"]["fallback_reason"].is_string(), "{next}");
    rig.restores_as_the_image("vm", &["--key", s(&rig.key)]);
    rig.assert_no_plaintext();
}
