//! `bulwark key` and the key options of backup and restore (docs/encryption.md), through the
//! real binary: create (with its warning), show, paper and unpaper, passwd (the old passphrase
//! stops working), rotate (old chains stay readable, the passphrase stays), and the clear
//! refusals: a wrong passphrase, a public key given where a secret key is needed, an existing
//! file, a key file other users could read or replace, a create or rotate that cannot write
//! every file (nothing is written). Also: a writable export's overlay is private.

mod common;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bulwark_testkit::system::job_args;
use common::{bulwark_pass as bulwark, create_write_only_key, err, init_repo, ok, s, Export};

/// `bulwark key show KEY` under `pass`.
fn key_show(key: &Path, pass: &str) -> Output {
    bulwark(&["key", "show", s(key)], Some(pass), None)
}

/// `bulwark key passwd KEY` from passphrase `old` to `new` (the environment variables).
fn passwd(key: &Path, old: &str, new: &str) -> Output {
    Command::new(common::bin())
        .args(["key", "passwd", s(key)])
        .env("BULWARK_PASSPHRASE", old)
        .env("BULWARK_NEW_PASSPHRASE", new)
        .output()
        .unwrap()
}

/// `bulwark key create --out KEY` under `pass`, which must succeed.
fn create_key(key: &Path, pass: &str) {
    ok(&bulwark(
        &["key", "create", "--out", s(key)],
        Some(pass),
        None,
    ));
}

/// `bulwark key paper KEY`, typed back as `typed` makes it, through `bulwark key unpaper`:
/// the same file.
fn paper_round_trip(key: &Path, typed: impl Fn(&str) -> String) {
    let paper = ok(&bulwark(&["key", "paper", s(key)], None, None));
    let back = key.with_extension("back");
    ok(&bulwark(
        &["key", "unpaper", "--out", s(&back)],
        None,
        Some(&typed(&paper)),
    ));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(key).unwrap());
}

/// A scratch folder and the symmetric key `k.key` in it, under `pass`.
fn scratch_key(pass: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("k.key");
    create_key(&key, pass);
    (d, key)
}

/// A scratch folder with the symmetric key `k.key` (passphrase "pw"), the write-only pair
/// `r.key` (passphrase "wo") and `c.pub`, a repository and a 4 MiB image `disk.img`.
struct Rig {
    d: tempfile::TempDir,
    key: PathBuf,
    private: PathBuf,
    public: PathBuf,
    repo: PathBuf,
    img: PathBuf,
}

impl Rig {
    fn new(seed: u8) -> Rig {
        let (d, key) = scratch_key("pw");
        let (private, public) = (d.path().join("r.key"), d.path().join("c.pub"));
        create_write_only_key(&private, &public, "wo");
        let repo = init_repo(d.path());
        let img = d.path().join("disk.img");
        image(&img, seed);
        Rig {
            d,
            key,
            private,
            public,
            repo,
            img,
        }
    }

    /// `bulwark CMD` of job `vm` with `opts` on `target`, under `pass`.
    fn job(&self, cmd: &str, opts: &[&str], target: &Path, pass: Option<&str>) -> Output {
        bulwark(
            &job_args(cmd, s(&self.repo), "vm", opts, target),
            pass,
            None,
        )
    }
}

/// The permission bits of `p`.
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `bulwark CMD` of job `vm` of `repo` with `--key KEY` and `opts`, under `pass`.
fn with_key(
    cmd: &str,
    repo: &Path,
    opts: &[&str],
    key: &Path,
    target: &Path,
    pass: &str,
) -> Output {
    let opts = [opts, &["--key", s(key)]].concat();
    bulwark(
        &job_args(cmd, s(repo), "vm", &opts, target),
        Some(pass),
        None,
    )
}

fn image(p: &Path, seed: u8) {
    let f = std::fs::File::create(p).unwrap();
    f.set_len(4 << 20).unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect();
    f.write_all_at(&data, 0).unwrap();
    f.write_all_at(&b"some text ".repeat(20_000), 1 << 20)
        .unwrap();
}

#[test]
fn key_commands_and_encrypted_backup_and_restore_through_the_binary() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("k.key");
    let o = bulwark(
        &["key", "create", "--out", s(&key)],
        Some("first pass"),
        None,
    );
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("losing every copy"),
        "the first key create warns"
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let e = err(&bulwark(
        &["key", "create", "--out", s(&key)],
        Some("x"),
        None,
    ));
    assert!(e.contains("never overwritten"), "{e}");
    let show = ok(&key_show(&key, "first pass"));
    assert!(show.contains("generation 1: fingerprint"), "{show}");
    let e = err(&key_show(&key, "wrong"));
    assert!(e.contains("wrong passphrase"), "{e}");

    // Paper copy and back: the same file.
    paper_round_trip(&key, |t| t.to_string());

    // Backups with the key; restore refused without it, with a wrong passphrase, and right.
    let repo = init_repo(d.path());
    let img = d.path().join("disk.img");
    image(&img, 1);
    ok(&with_key("backup", &repo, &[], &key, &img, "first pass"));
    let out = d.path().join("out.img");
    let e = err(&bulwark(
        &job_args("restore", s(&repo), "vm", &[], &out),
        None,
        None,
    ));
    assert!(e.contains("is encrypted") && e.contains("--key"), "{e}");
    let e = err(&with_key("restore", &repo, &[], &key, &out, "nope"));
    assert!(e.contains("wrong passphrase"), "{e}");
    assert!(!out.exists(), "nothing was written");
    ok(&with_key("restore", &repo, &[], &key, &out, "first pass"));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    std::fs::remove_file(&out).unwrap();

    // A new passphrase: the old one no longer opens the file.
    ok(&passwd(&key, "first pass", "second pass"));
    let e = err(&key_show(&key, "first pass"));
    assert!(e.contains("wrong passphrase"), "{e}");

    // Rotate: a new chain uses generation 2, the old chain still restores.
    let rot = ok(&bulwark(
        &["key", "rotate", s(&key)],
        Some("second pass"),
        None,
    ));
    assert!(rot.contains("generation 2"), "{rot}");
    image(&img, 2);
    ok(&with_key(
        "backup",
        &repo,
        &["--full"],
        &key,
        &img,
        "second pass",
    ));
    let show = ok(&key_show(&key, "second pass"));
    assert!(
        show.contains("generation 2") && show.contains("current"),
        "{show}"
    );
    ok(&with_key("restore", &repo, &[], &key, &out, "second pass"));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());

    // Write-only keys: the public key is refused where a secret key is needed.
    let (private, public) = (d.path().join("r.key"), d.path().join("c.pub"));
    create_write_only_key(&private, &public, "p");
    let o2 = d.path().join("o2");
    let e = err(&bulwark(
        &job_args(
            "restore",
            s(&repo),
            "vm",
            &["--restore-key", s(&public)],
            &o2,
        ),
        Some("p"),
        None,
    ));
    assert!(e.contains("public key") && e.contains("never read"), "{e}");
    let e = err(&with_key("backup", &repo, &[], &private, &img, "p"));
    assert!(e.contains("--public-key"), "{e}");
}

#[test]
fn rotate_keeps_the_passphrase_of_the_file() {
    let (d, key) = scratch_key("orig");
    ok(&bulwark(&["key", "rotate", s(&key)], Some("orig"), None));
    let show = ok(&key_show(&key, "orig"));
    assert!(show.contains("generation 2"), "{show}");

    // A restore key: the new public key is written, and its fingerprint is the new current one.
    let (private, public, new_public) = (
        d.path().join("r.key"),
        d.path().join("c.pub"),
        d.path().join("c2.pub"),
    );
    create_write_only_key(&private, &public, "wo");
    let rot = ok(&bulwark(
        &["key", "rotate", s(&private), "--public", s(&new_public)],
        Some("wo"),
        None,
    ));
    assert!(rot.contains("generation 2"), "{rot}");
    assert_eq!(mode(&new_public), 0o600);
    let show = ok(&key_show(&private, "wo"));
    let fp = |show: &str, line: &str| {
        let l = show.lines().find(|l| l.contains(line)).unwrap().to_string();
        l.split("fingerprint ").nth(1).unwrap()[..32].to_string()
    };
    let pub_show = ok(&bulwark(&["key", "show", s(&new_public)], None, None));
    assert_eq!(fp(&show, "generation 2"), fp(&pub_show, "generation 1"));

    // A symmetric key has no public key: --public is refused, nothing written.
    let e = err(&bulwark(
        &[
            "key",
            "rotate",
            s(&key),
            "--public",
            s(&d.path().join("x.pub")),
        ],
        Some("orig"),
        None,
    ));
    assert!(e.contains("no public key"), "{e}");
    assert!(!d.path().join("x.pub").exists());
}

#[test]
fn rotate_on_a_terminal_asks_for_the_passphrase_once_and_keeps_it() {
    let t = "rotate_on_a_terminal_asks_for_the_passphrase_once_and_keeps_it";
    // `script` gives the command a terminal, which is where the passphrase is read from.
    if !bulwark_testkit::require_tools(t, &["script"]) {
        return;
    }
    let (_d, key) = scratch_key("orig");
    let cmd = format!("'{}' key rotate '{}'", common::bin(), s(&key));
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env_remove("BULWARK_PASSPHRASE")
        .env_remove("BULWARK_NEW_PASSPHRASE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A second line is typed too: a rotate that asked again would seal the file under it.
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"orig\nother\n").unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    let text = ok(&o);
    assert!(text.contains("generation 2"), "{text}");
    assert_eq!(text.matches("assphrase").count(), 1, "one prompt: {text}");
    ok(&key_show(&key, "orig"));
    let e = err(&key_show(&key, "other"));
    assert!(e.contains("wrong passphrase"), "{e}");
}

#[test]
fn key_create_writes_every_file_or_none() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    // --public without --write-only: a usage error (exit 2), no symmetric key made instead.
    let o = bulwark(
        &[
            "key",
            "create",
            "--out",
            s(&p("y.key")),
            "--public",
            s(&p("y.pub")),
        ],
        Some("x"),
        None,
    );
    let e = err(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("--write-only"), "{e}");
    assert!(!p("y.key").exists() && !p("y.pub").exists());

    let existing = p("e.pub");
    std::fs::write(&existing, b"someone's").unwrap();
    let private = p("n.priv");
    for (public, says) in [
        (
            Path::new("/nonexistent/x.pub").to_path_buf(),
            "does not exist",
        ),
        (private.clone(), "same file"),
        (d.path().join(".").join("n.priv"), "same file"),
        (existing.clone(), "never overwritten"),
        // The checks pass, the second file cannot be written: the first is removed again.
        (
            Path::new("/proc/bulwark-test.pub").to_path_buf(),
            "removed again",
        ),
    ] {
        let o = bulwark(
            &bulwark_testkit::keys::write_only_args(s(&private), s(&public)),
            Some("x"),
            None,
        );
        let e = err(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(
            e.contains(says) && e.contains("nothing was written"),
            "{public:?}: {e}"
        );
        assert!(!private.exists(), "{public:?}: no orphan private key");
    }
    assert_eq!(std::fs::read(&existing).unwrap(), b"someone's");
    let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "only e.pub: {names:?}");

    // Rotate checks the new public key's name before it writes either file.
    let (r, c) = (p("r.key"), p("c.pub"));
    create_write_only_key(&r, &c, "wo");
    let before = std::fs::read(&r).unwrap();
    let e = err(&bulwark(
        &["key", "rotate", s(&r), "--public", s(&existing)],
        Some("wo"),
        None,
    ));
    assert!(e.contains("never overwritten"), "{e}");
    let e = err(&bulwark(
        &["key", "rotate", s(&r), "--public", "/proc/bulwark-test.pub"],
        Some("wo"),
        None,
    ));
    assert!(e.contains("nothing was written"), "{e}");
    assert_eq!(
        std::fs::read(&r).unwrap(),
        before,
        "the restore key is unchanged"
    );
}

#[test]
fn key_files_other_users_could_read_or_replace_are_refused() {
    let r = Rig::new(3);
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    chmod(&r.key, 0o640);
    let e = err(&key_show(&r.key, "pw"));
    assert!(e.contains(&format!("chmod 600 {}", s(&r.key))), "{e}");
    let e = err(&with_key("backup", &r.repo, &[], &r.key, &r.img, "pw"));
    assert!(e.contains("chmod 600"), "{e}");
    chmod(&r.key, 0o600);
    ok(&key_show(&r.key, "pw"));

    chmod(&r.private, 0o604);
    let restore = ["--restore-key", s(&r.private)];
    let e = err(&r.job("restore", &restore, &r.d.path().join("out"), Some("wo")));
    assert!(e.contains("chmod 600"), "{e}");

    // A public key may be readable by all, never writable by others.
    chmod(&r.public, 0o644);
    ok(&bulwark(&["key", "show", s(&r.public)], None, None));
    chmod(&r.public, 0o664);
    let e = err(&r.job("backup", &["--public-key", s(&r.public)], &r.img, None));
    assert!(e.contains("swap in") && e.contains("chmod 600"), "{e}");
}

#[test]
fn a_public_key_given_for_a_secret_one_says_what_to_do_with_it() {
    let r = Rig::new(4);
    let public = s(&r.public);
    // No passphrase is given: none is asked for before the refusal.
    let e = err(&r.job("backup", &["--key", public], &r.img, None));
    assert!(
        e.contains("--public-key") && !e.contains("--restore-key"),
        "{e}"
    );
    for args in [
        vec!["key", "passwd", public],
        vec!["key", "rotate", public],
        vec!["key", "rotate", public, "--public", "new.pub"],
    ] {
        let e = err(&bulwark(&args, None, None));
        assert!(
            e.contains("no passphrase") && e.contains("--public NEW.pub"),
            "{args:?}: {e}"
        );
    }

    // Its paper copy does not claim a passphrase.
    let paper = ok(&bulwark(&["key", "paper", public], None, None));
    assert!(
        paper.contains("no passphrase") && !paper.contains("protected by its passphrase"),
        "{paper}"
    );
}

#[test]
fn passwd_with_an_empty_new_passphrase_names_its_variable_and_keeps_the_old() {
    let (_d, key) = scratch_key("old");
    let e = err(&passwd(&key, "old", ""));
    assert!(e.contains("BULWARK_NEW_PASSPHRASE"), "{e}");
    assert!(!e.contains("set BULWARK_PASSPHRASE"), "{e}");
    ok(&key_show(&key, "old"));
}

#[test]
fn a_paper_copy_typed_in_uppercase_rebuilds_the_file() {
    let (_d, key) = scratch_key("pw");
    paper_round_trip(&key, str::to_uppercase);
    // A name that cannot be written is refused before the lines are read.
    let e = err(&bulwark(
        &["key", "unpaper", "--out", "/nonexistent/k.key"],
        None,
        None,
    ));
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn a_writable_export_of_an_encrypted_point_creates_its_overlay_private() {
    let r = Rig::new(5);
    ok(&with_key("backup", &r.repo, &[], &r.key, &r.img, "pw"));
    let overlay = r.d.path().join("ov.img");
    let args = ["--repo", s(&r.repo), "--job", "vm", "--key", s(&r.key)];
    let export = Export::try_start(
        &[&args[..], &["--writable", s(&overlay)]].concat(),
        &r.d.path().join("nbd.sock"),
        Some("pw"),
    )
    .unwrap_or_else(|e| panic!("export failed: {e}"));
    assert_eq!(mode(&overlay), 0o600, "the overlay will hold plaintext");
    assert_eq!(mode(&r.d.path().join("ov.img.map")), 0o600);
    drop(export);
}
