//! Keys of unattended runs (docs/jobs.md "Encrypted jobs", docs/encryption.md): a job file
//! with a symmetric `key`, run with no terminal as its timer runs it, reads the passphrase from
//! `BULWARK_PASSPHRASE_FILE` or the systemd credential `bulwark-passphrase`, and without any
//! source fails naming every way; key files another user could replace (their owner, their
//! folder) and key "files" that are not files are refused; `key passwd` and `key rotate`
//! through a link write the file it leads to.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulwark_testkit::system::{job_args, job_file};
use common::{bulwark_pass as bulwark, create_write_only_key, err, init_repo, ok, s};

const PASS: &str = "nightly passphrase";

/// Every variable that gives a passphrase.
const SOURCES: [&str; 5] = [
    "BULWARK_PASSPHRASE",
    "BULWARK_PASSPHRASE_FILE",
    "BULWARK_NEW_PASSPHRASE",
    "BULWARK_NEW_PASSPHRASE_FILE",
    "CREDENTIALS_DIRECTORY",
];

/// `bulwark args` as a timer starts it: no controlling terminal (`setsid`), standard input
/// /dev/null, and of the passphrase sources only `env`.
fn detached(args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let mut c = Command::new("setsid");
    c.arg("-w")
        .arg(common::bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in SOURCES {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c.output().unwrap()
}

/// Standard output and error of `o` together (a job run prints a disk's error on stdout).
fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A 4 MiB image of random data.
fn image(path: &Path, seed: u64) {
    std::fs::write(path, bulwark_testkit::Rng::new(seed).bytes(4 << 20)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes `text` to `path` with `mode`.
fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    chmod(path, mode);
}

/// `bulwark key create --out KEY` under `pass`.
fn create_key(key: &Path, pass: &str) {
    ok(&bulwark(
        &["key", "create", "--out", s(key)],
        Some(pass),
        None,
    ));
}

/// The newest point of `job`, restored with `key`, is byte-identical to `img`.
fn restores_identical(repo: &Path, job: &str, key: &Path, img: &Path, out: &Path) {
    ok(&bulwark(
        &job_args("restore", s(repo), job, &["--key", s(key)], out),
        Some(PASS),
        None,
    ));
    assert!(
        std::fs::read(out).unwrap() == std::fs::read(img).unwrap(),
        "the restore of {job} differs from its source"
    );
}

#[test]
fn a_scheduled_job_with_a_symmetric_key_reads_its_passphrase_from_a_file_or_a_systemd_credential() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("sym.key");
    create_key(&key, PASS);
    let repo = init_repo(d.path());
    let img = d.path().join("disk.img");
    image(&img, 1);
    let job = d.path().join("db.toml");
    job_file(&job, "db", &img, &repo, &format!("key = \"{}\"\n", s(&key)));
    let state = d.path().join("state");
    let run =
        |env: &[(&str, &OsStr)]| detached(&["job", "run", "--state-dir", s(&state), s(&job)], env);

    // No source at all: exit 2, naming every way to give it.
    let o = run(&[]);
    let text = both(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    for way in [
        "BULWARK_PASSPHRASE=",
        "BULWARK_PASSPHRASE_FILE=PATH",
        "LoadCredential=bulwark-passphrase:",
        "public_key",
    ] {
        assert!(text.contains(way), "does not name {way}: {text}");
    }

    // A passphrase file, with the newline `echo` leaves.
    let pass_file = d.path().join("passphrase");
    write_mode(&pass_file, &format!("{PASS}\n"), 0o600);
    let from_file = [("BULWARK_PASSPHRASE_FILE", pass_file.as_os_str())];
    let o = run(&from_file);
    assert!(o.status.success(), "{}", both(&o));
    restores_identical(&repo, "db", &key, &img, &d.path().join("out1"));

    // One other users could read is refused, saying what to do.
    chmod(&pass_file, 0o640);
    let o = run(&from_file);
    let text = both(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("chmod 600 {}", s(&pass_file))),
        "{text}"
    );
    chmod(&pass_file, 0o600);

    // A systemd credential, as LoadCredential= leaves it: mode 0400 in a private folder.
    image(&img, 2);
    let creds = d.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    write_mode(&creds.join("bulwark-passphrase"), PASS, 0o400);
    chmod(&creds, 0o500);
    let from_credential = [("CREDENTIALS_DIRECTORY", creds.as_os_str())];
    let o = run(&from_credential);
    assert!(o.status.success(), "{}", both(&o));
    restores_identical(&repo, "db", &key, &img, &d.path().join("out2"));

    // The order: BULWARK_PASSPHRASE, then BULWARK_PASSPHRASE_FILE, then the credential.
    let wrong = d.path().join("wrong");
    write_mode(&wrong, "not the passphrase\n", 0o600);
    let show = |env: &[(&str, &OsStr)]| detached(&["key", "show", s(&key)], env);
    let wrong_file = ("BULWARK_PASSPHRASE_FILE", wrong.as_os_str());
    let e = both(&show(&[wrong_file, from_credential[0]]));
    assert!(e.contains("wrong passphrase"), "the file goes first: {e}");
    let right_env = ("BULWARK_PASSPHRASE", OsStr::new(PASS));
    ok(&show(&[right_env, wrong_file]));
    // A credential folder without the credential falls through to the terminal.
    let empty = d.path().join("no-credentials");
    std::fs::create_dir(&empty).unwrap();
    let o = show(&[("CREDENTIALS_DIRECTORY", empty.as_os_str())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        both(&o).contains("holds no credential bulwark-passphrase"),
        "{}",
        both(&o)
    );
}

#[test]
fn key_files_another_user_could_replace_are_refused() {
    const T: &str = "key_files_another_user_could_replace_are_refused";
    if !bulwark_testkit::skip::require_root(T, "chown of key files to another user") {
        return;
    }
    const NOBODY: u32 = 65534;
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("k.key");
    create_key(&key, PASS);
    let (private, public) = (d.path().join("r.key"), d.path().join("wo.pub"));
    create_write_only_key(&private, &public, "wo");
    let repo = init_repo(d.path());
    let img = d.path().join("disk.img");
    image(&img, 3);
    let refused = |o: Output, says: &[&str]| {
        let e = err(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        for w in says {
            assert!(e.contains(w), "does not say {w}: {e}");
        }
    };
    let show = |k: &Path| bulwark(&["key", "show", s(k)], Some(PASS), None);

    // A public key of another user, readable by all as a public key may be: they could swap
    // in their own.
    chmod(&public, 0o644);
    std::os::unix::fs::chown(&public, Some(NOBODY), None).unwrap();
    let backup = || {
        bulwark(
            &job_args(
                "backup",
                s(&repo),
                "wo",
                &["--public-key", s(&public)],
                &img,
            ),
            None,
            None,
        )
    };
    refused(
        backup(),
        &["owned by uid 65534", &format!("chown 0 {}", s(&public))],
    );
    std::os::unix::fs::chown(&public, Some(0), None).unwrap();
    ok(&backup());

    // A secret key of another user.
    std::os::unix::fs::chown(&key, Some(NOBODY), None).unwrap();
    refused(show(&key), &["owned by uid 65534", "chown 0"]);
    std::os::unix::fs::chown(&key, Some(0), None).unwrap();
    ok(&show(&key));

    // A folder every user may write, without the sticky bit; also reached through a link
    // from a private folder.
    let open = d.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::copy(&key, open.join("k.key")).unwrap();
    chmod(&open.join("k.key"), 0o600);
    let link = d.path().join("link.key");
    std::os::unix::fs::symlink(open.join("k.key"), &link).unwrap();
    chmod(&open, 0o777);
    let chmod_ow = format!("chmod o-w {}", s(&open));
    refused(show(&open.join("k.key")), &["no sticky bit", &chmod_ow]);
    refused(show(&link), &["no sticky bit", &chmod_ow]);
    chmod(&open, 0o1777);
    ok(&show(&open.join("k.key")));
    ok(&show(&link));

    // A folder of another user.
    let theirs = d.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::copy(&key, theirs.join("k.key")).unwrap();
    chmod(&theirs.join("k.key"), 0o600);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), None).unwrap();
    refused(
        show(&theirs.join("k.key")),
        &["folder", "owned by uid 65534"],
    );
}

#[test]
fn a_fifo_or_a_device_given_as_a_key_file_is_refused_at_once() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("k.key");
    let o = Command::new("mkfifo").arg(&fifo).output().unwrap();
    assert!(o.status.success(), "mkfifo: {}", bulwark_testkit::text(&o));
    for (args, says) in [
        (vec!["key", "show", s(&fifo)], "FIFO"),
        (vec!["key", "paper", s(&fifo)], "FIFO"),
        (vec!["key", "show", "/dev/zero"], "a device"),
    ] {
        let mut child = Command::new(common::bin())
            .args(&args)
            .env("BULWARK_PASSPHRASE", PASS)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bulwark {args:?} still waits after 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        let e = err(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(says) && e.contains("not a regular file"), "{e}");
    }
}

#[test]
fn key_passwd_and_rotate_through_a_link_write_the_file_it_leads_to() {
    let d = tempfile::tempdir().unwrap();
    let real_dir = d.path().join("keys");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("k.key");
    create_key(&real, "old");
    let link = d.path().join("k.key");
    std::os::unix::fs::symlink("keys/k.key", &link).unwrap();

    let o = Command::new(common::bin())
        .args(["key", "passwd", s(&link)])
        .env("BULWARK_PASSPHRASE", "old")
        .env("BULWARK_NEW_PASSPHRASE", "new")
        .output()
        .unwrap();
    ok(&o);
    assert!(link.is_symlink(), "key passwd replaced the link");
    let show = |k: &Path, p: &str| bulwark(&["key", "show", s(k)], Some(p), None);
    ok(&show(&real, "new"));
    assert!(err(&show(&real, "old")).contains("wrong passphrase"));

    let rot = ok(&bulwark(&["key", "rotate", s(&link)], Some("new"), None));
    assert!(rot.contains(s(&real)), "{rot}");
    assert!(link.is_symlink(), "key rotate replaced the link");
    assert!(ok(&show(&real, "new")).contains("generation 2"));

    // A write-only pair through a link to its restore key.
    let (private, public) = (real_dir.join("r.key"), d.path().join("c.pub"));
    create_write_only_key(&private, &public, "wo");
    let plink = d.path().join("r.key");
    std::os::unix::fs::symlink(&private, &plink).unwrap();
    let new_pub = d.path().join("c2.pub");
    ok(&bulwark(
        &["key", "rotate", s(&plink), "--public", s(&new_pub)],
        Some("wo"),
        None,
    ));
    assert!(plink.is_symlink(), "key rotate replaced the link");
    assert!(ok(&show(&private, "wo")).contains("generation 2"));
    assert!(new_pub.is_file());

    // Nothing was left beside the links: the temporary files were in the keys' own folder.
    let mut names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["c.pub", "c2.pub", "k.key", "keys", "r.key"]);
}

#[test]
fn the_shipped_encrypted_job_example_parses_and_uses_a_public_key() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/jobs/encrypted.toml");
    let job = bulwark_jobs::JobFile::load(&f).unwrap();
    assert!(job.key.is_none());
    assert!(job.public_key.as_deref().is_some_and(Path::is_absolute));
}
