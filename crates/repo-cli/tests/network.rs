//! The transport service end to end: the real `bulwark-repo serve` binary as a real
//! unprivileged user (created here when root, removed afterwards), real `bulwark` clients over
//! TLS on 127.0.0.1. Without root these tests print why they skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_protocol::{ErrorCode, Msg};
use bulwark_remote::{Conn, RemoteAddr, RemoteError};
use bulwark_testkit::need_root;
use bulwark_testkit::serve::{bin_repo, json_of as json, Service};
use bulwark_testkit::{images, system, Rng};

/// Overwrites a few 64 KiB stretches.
fn change(path: &Path, seed: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut rng = Rng::new(seed);
    for _ in 0..3 {
        let at = rng.next_u64() % (len - 65536);
        f.write_all_at(&rng.bytes(65536), at).unwrap();
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn enroll_backup_incremental_restore_list_verify_over_tls() {
    need_root!("enroll_backup_incremental_restore_list_verify_over_tls");
    let svc = Service::start(&[]);
    svc.enroll("alice");
    // Credentials are private files.
    use std::os::unix::fs::PermissionsExt;
    for f in std::fs::read_dir(svc.config("alice").join("repositories")).unwrap() {
        for g in std::fs::read_dir(f.unwrap().path()).unwrap() {
            let mode = g.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "credential file readable by others");
        }
    }
    for f in ["ca.key", "server.key", "ca.crt"] {
        let m = std::fs::metadata(svc.repo.join("net").join(f)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&m),
            svc.user.uid,
            "{f} owned by the service user"
        );
    }
    let img = svc.path("disk.img");
    images::mixed(&img, 1, 12);
    let before = bulwark_time::UnixTime::now().secs();
    let alice = svc.bulwark("alice");
    let full = alice.backup_json("vm1", &img, &["--block-size", "256K"]);
    assert_eq!(full["kind"], "full");
    assert_eq!(full["client"], "alice");
    let created = full["created_unix"].as_i64().unwrap();
    assert!(
        (before - 5..=before + 60).contains(&created),
        "created {created} by the repository clock"
    );
    let day1 = svc.path("day1.img");
    std::fs::copy(&img, &day1).unwrap();
    change(&img, 2);
    let inc = json(&svc.client(
        "alice",
        &[
            "--json",
            "backup",
            "--repo",
            &format!("bulwark://{}", svc.addr),
            "--job",
            "vm1",
            s(&img),
        ],
    ));
    assert_eq!(inc["kind"], "incremental");
    assert!(inc["blocks_unchanged"].as_u64().unwrap() > 0);
    assert!(inc["blocks_new"].as_u64().unwrap() >= 1 && inc["blocks_new"].as_u64().unwrap() <= 6);
    // Latest and first restore byte-identical.
    let out = svc.path("out.img");
    assert!(alice.restore("vm1", &out, &[]).status.success());
    assert!(same_file(&out, &img), "latest restore differs");
    let out1 = svc.path("out1.img");
    let first = full["point"].as_str().unwrap();
    assert!(alice
        .restore("vm1", &out1, &["--point", first])
        .status
        .success());
    assert!(same_file(&out1, &day1), "first restore differs");
    // List: both points, sent by alice.
    let l = alice.list_json();
    let points = l["jobs"][0]["points"].as_array().unwrap();
    assert_eq!(l["jobs"][0]["job"], "vm1");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["kind"], "full");
    assert_eq!(points[1]["kind"], "incremental");
    assert!(points.iter().all(|p| p["client"] == "alice"));
    // Server-side verify: clean, then damage is reported with exit 1.
    let v = json(&svc.client("alice", &["--json", "verify", "--repo", &svc.addr]));
    assert_eq!(v["clean"], true);
    assert_eq!(v["points_checked"], 2);
    // The local view of the same repository (as the service user) agrees.
    let o = svc.admin(&["--json", "verify", s(&svc.repo)]);
    assert!(o.status.success());
    // A cut connection during a backup leaves nothing visible.
    let big = svc.path("big.img");
    images::mixed(&big, 9, 24);
    let mut c = alice
        .command(&[
            "backup",
            "--repo",
            &svc.addr,
            "--job",
            "vm2",
            s(&big),
            "--compression",
            "19",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the server is writing the restore point (a fixed delay let a fast machine
    // finish the backup first), so the connection is really cut mid-backup.
    let writing = || {
        std::fs::read_dir(svc.repo.join("incoming"))
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            })
            .unwrap_or(false)
    };
    let started = std::time::Instant::now();
    while !writing() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(writing(), "the backup never started writing on the server");
    c.kill().unwrap();
    let status = c.wait().unwrap();
    assert!(
        !status.success(),
        "the backup finished before it could be cut"
    );
    std::thread::sleep(Duration::from_millis(500));
    let l = alice.list_json();
    let jobs = bulwark_testkit::cmd::strings(&l["jobs"], "job");
    assert_eq!(
        jobs,
        vec!["vm1"],
        "a killed backup left a visible restore point"
    );
    let leftovers: Vec<_> = std::fs::read_dir(svc.repo.join("incoming"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary file left in incoming/: {leftovers:?}"
    );
    // The next run starts cleanly.
    assert!(alice.backup("vm2", &big, &[]).status.success());
    let log = svc.log_text();
    assert!(
        log.contains("client authenticated") && log.contains("alice"),
        "no per-connection identity in the log"
    );
    assert!(
        log.contains("connection closed"),
        "no close reason in the log"
    );
}

#[test]
fn serve_refuses_to_run_as_root() {
    need_root!("serve_refuses_to_run_as_root");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let o = Command::new(bin_repo())
        .args(["init", s(&repo)])
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut child = Command::new(bin_repo())
        .args(["serve", s(&repo), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("serve kept running as root");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = bulwark_testkit::cmd::read_stderr(&mut child);
    eprintln!("{err}");
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("refusing to run as root"), "{err}");
}

/// A raw TLS client built from enrolled credentials (or none), for attacks.
fn tls_client(
    svc: &Service,
    creds: Option<(&Path, &Path)>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let ca = CertificateDer::from_pem_file(svc.repo.join("net/ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match creds {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![bulwark_protocol::ALPN_SESSION.to_vec()];
    let sock = TcpStream::connect(&svc.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let conn = rustls::ClientConnection::new(
        Arc::new(cfg),
        ServerName::try_from("bulwark-repository").unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

fn alice_creds(svc: &Service, client: &str) -> (PathBuf, PathBuf) {
    let d = std::fs::read_dir(svc.config(client).join("repositories"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    (d.join("client.crt"), d.join("client.key"))
}

/// Sends Hello and expects a Welcome; returns what the server answered, or the error.
fn try_session(
    t: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) -> Result<Msg<'static>, String> {
    let hello = Msg::Hello {
        version: 1,
        software: "attack".into(),
    };
    bulwark_protocol::write_msg(t, &hello).map_err(|e| e.to_string())?;
    t.flush().map_err(|e| e.to_string())?;
    let mut fb = bulwark_protocol::FrameBuf::default();
    bulwark_protocol::read_frame(t, &mut fb, |_| {}).map_err(|e| e.to_string())?;
    match fb.msg().map_err(|e| e.to_string())? {
        Msg::Welcome { client, .. } => Ok(Msg::Welcome {
            version: 1,
            client,
            server_unix: 0,
            repository: String::new(),
        }),
        Msg::Error { code, message } => Err(format!("{code}: {message}")),
        m => Err(format!("{:?}", m.ty())),
    }
}

/// A session of the client with the certificate `crt` and key `key` (its Hello answered),
/// whose next bytes, `bytes`, are sent.
fn session_sending(
    svc: &Service,
    crt: &Path,
    key: &Path,
    bytes: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut t = tls_client(svc, Some((crt, key)));
    try_session(&mut t).unwrap();
    t.write_all(bytes).unwrap();
    t.flush().unwrap();
    t
}

/// Reads frames until an `Error` (returned) or the end of the stream.
fn error_code(
    t: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) -> Option<ErrorCode> {
    let mut fb = bulwark_protocol::FrameBuf::default();
    loop {
        bulwark_protocol::read_frame(t, &mut fb, |_| {}).ok()?;
        if let Ok(Msg::Error { code, .. }) = fb.msg() {
            return Some(code);
        }
    }
}

#[test]
fn security_refusals() {
    need_root!("security_refusals");
    let svc = Service::start(&[]);
    // Tokens: wrong, then reused, then expired are refused; the fingerprint must match.
    let tok = svc.token("alice", "10m");
    let mut wrong = tok.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    let o = svc.enroll_with("alice", &wrong);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("token rejected"));
    let bad_fp = svc.client(
        "alice",
        &[
            "enroll",
            &svc.addr,
            &tok,
            "--fingerprint",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ],
    );
    assert!(
        !bad_fp.status.success(),
        "enrolled against a wrong fingerprint"
    );
    assert!(
        svc.enroll_with("alice", &tok).status.success(),
        "the right token failed (the wrong-fingerprint attempt must not consume it)"
    );
    let o = svc.enroll_with("mallory", &tok);
    assert!(!o.status.success(), "a used token worked twice");
    assert!(String::from_utf8_lossy(&o.stderr).contains("token rejected"));
    let short = svc.token("eve", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let o = svc.enroll_with("eve", &short);
    assert!(!o.status.success(), "an expired token worked");
    assert!(String::from_utf8_lossy(&o.stderr).contains("token rejected"));
    svc.enroll("bob");

    // Alice backs up; Bob cannot see, read, verify or extend her job.
    let img = svc.path("a.img");
    images::mixed(&img, 3, 4);
    assert!(svc
        .bulwark("alice")
        .backup("vm-a", &img, &[])
        .status
        .success());
    let bob = svc.bulwark("bob");
    let l = bob.list_json();
    assert!(
        l["jobs"].as_array().unwrap().is_empty(),
        "bob sees alice's jobs: {l}"
    );
    let o = svc.client("bob", &["list", "--repo", &svc.addr, "--job", "vm-a"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no such job"));
    let o = bob.restore("vm-a", &svc.path("stolen.img"), &[]);
    assert!(!o.status.success() && !svc.path("stolen.img").exists());
    let o = svc.client("bob", &["verify", "--repo", &svc.addr, "--job", "vm-a"]);
    assert!(!o.status.success());
    let o = bob.backup("vm-a", &img, &[]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("belongs to another client")
    );

    // Path-traversal and otherwise invalid job names are refused by the server itself.
    let cfg = svc.config("alice");
    for bad in ["../../etc", "a/b", "..", ".hidden", "x\u{1}y", ""] {
        for req in [
            Msg::ListPoints { job: bad.into() },
            Msg::BeginRestore {
                job: bad.into(),
                point: None,
            },
            Msg::BeginBackup(bulwark_protocol::BackupRequest {
                job: bad.into(),
                disk_size: 1 << 20,
                block_size: 0,
                compression_level: 1,
                force_full: false,
            }),
        ] {
            let mut c = Conn::session(&cfg, &RemoteAddr::parse(&svc.addr).unwrap()).unwrap();
            c.send(&req).unwrap();
            match c.recv() {
                Err(RemoteError::Refused { code, .. }) => {
                    assert_eq!(code, ErrorCode::InvalidName, "{bad:?}")
                }
                other => panic!("job name {bad:?} not refused: {:?}", other.map(|m| m.ty())),
            }
        }
    }
    assert!(std::fs::read_dir(svc.repo.join("store"))
        .unwrap()
        .all(|e| e.unwrap().file_name() == "vm-a"));

    // No client certificate: refused.
    let mut t = tls_client(&svc, None);
    assert!(
        try_session(&mut t).is_err(),
        "a client without certificate got a session"
    );
    // A certificate from another CA: refused.
    let other = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let k = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&k, &ca, &ca_key).unwrap();
    std::fs::write(other.path().join("c.crt"), cert.pem()).unwrap();
    std::fs::write(other.path().join("c.key"), k.serialize_pem()).unwrap();
    let mut t = tls_client(
        &svc,
        Some((&other.path().join("c.crt"), &other.path().join("c.key"))),
    );
    assert!(
        try_session(&mut t).is_err(),
        "a certificate of another CA got a session"
    );
    // Alice's own certificate works (the checks above can fail).
    let (crt, key) = alice_creds(&svc, "alice");
    let mut t = tls_client(&svc, Some((&crt, &key)));
    assert!(try_session(&mut t).is_ok());
    // Revoked: refused at the handshake from the next connection on.
    assert!(svc
        .admin(&["clients", s(&svc.repo), "--revoke", "bob"])
        .status
        .success());
    let (bcrt, bkey) = alice_creds(&svc, "bob");
    let mut t = tls_client(&svc, Some((&bcrt, &bkey)));
    let e = try_session(&mut t).unwrap_err();
    assert!(e.contains("Revoked"), "{e}");
    let o = svc.client("bob", &["list", "--repo", &svc.addr]);
    assert!(!o.status.success());
    let listing = svc.admin(&["clients", s(&svc.repo)]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("REVOKED"));
    assert!(svc
        .client("alice", &["list", "--repo", &svc.addr])
        .status
        .success());
    let log = svc.log_text();
    assert!(log.contains("revoked"), "revocation refusal not logged");
}

#[test]
fn robustness_attacks_while_an_honest_client_backs_up() {
    need_root!("robustness_attacks_while_an_honest_client_backs_up");
    let svc = Service::start(&["--frame-timeout", "2", "--idle-timeout", "6"]);
    svc.enroll("honest");
    svc.enroll("attacker");
    let (crt, key) = alice_creds(&svc, "attacker");
    let img = svc.path("h.img");
    images::mixed(&img, 5, 32);
    let svc = Arc::new(svc);
    let honest = {
        let svc = svc.clone();
        let img = img.clone();
        std::thread::spawn(move || {
            let honest = svc.bulwark("honest");
            let o = honest.backup("honest", &img, &["--block-size", "256K"]);
            assert!(o.status.success(), "honest backup failed under attack");
            change(&img, 77);
            let o = honest.backup("honest", &img, &[]);
            assert!(o.status.success(), "honest incremental failed under attack");
        })
    };
    let mut rng = Rng::new(42);
    // Random bytes instead of TLS.
    for _ in 0..5 {
        let mut t = TcpStream::connect(&svc.addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = t.write_all(&rng.bytes(4096));
        let mut b = [0u8; 64];
        let _ = t.read(&mut b); // an alert or EOF, never a hang past the deadline
    }
    // Random bytes inside an authenticated session: refused as malformed.
    for _ in 0..5 {
        let mut t = tls_client(&svc, Some((&crt, &key)));
        try_session(&mut t).unwrap();
        let mut junk = rng.bytes(2048);
        junk[4] = 0x7e; // an unknown type, so the frame is refused at its header
        let _ = t.write_all(&junk);
        let _ = t.flush();
        assert_eq!(error_code(&mut t), Some(ErrorCode::Malformed));
    }
    // A 4 GiB length prefix: refused at the header, nothing allocated.
    let mut t = session_sending(&svc, &crt, &key, &[0xff, 0xff, 0xff, 0xff, 0x23]);
    let started = Instant::now();
    assert_eq!(error_code(&mut t), Some(ErrorCode::TooLarge));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A truncated frame: the rest never comes; the frame deadline closes it.
    let mut t = session_sending(&svc, &crt, &key, &[100, 0, 0, 0, 0x12, 1, 2, 3]);
    let started = Instant::now();
    assert_eq!(error_code(&mut t), Some(ErrorCode::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "truncated frame held {:?}",
        started.elapsed()
    );
    // A truncated frame, then the connection drops.
    drop(session_sending(&svc, &crt, &key, &[100, 0, 0, 0, 0x12, 1]));
    // Slowloris, before TLS: a byte every 300 ms.
    let mut t = TcpStream::connect(&svc.addr).unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in rng.bytes(60) {
        if t.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        t.set_nonblocking(true).unwrap();
        let mut x = [0u8; 16];
        let r = t.read(&mut x);
        t.set_nonblocking(false).unwrap();
        if matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "slowloris (handshake) not cut off");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "slowloris held {:?}",
        started.elapsed()
    );
    // Slowloris inside a session: a frame trickled a byte at a time.
    let mut t = tls_client(&svc, Some((&crt, &key)));
    try_session(&mut t).unwrap();
    let mut frame = Vec::new();
    bulwark_protocol::write_msg(
        &mut frame,
        &Msg::ListPoints {
            job: "abcdefghijklmnopqrstuvwxyz0123456789".into(),
        },
    )
    .unwrap();
    let started = Instant::now();
    let mut cut = false;
    for b in frame {
        if t.write_all(&[b]).and_then(|_| t.flush()).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    if !cut {
        cut = error_code(&mut t) == Some(ErrorCode::Timeout);
    }
    assert!(
        cut && started.elapsed() < Duration::from_secs(8),
        "slowloris (frames) held {:?}",
        started.elapsed()
    );
    // 100 connections opened and dropped, some mid-handshake.
    for i in 0..100 {
        let mut t = TcpStream::connect(&svc.addr).unwrap();
        if i % 2 == 0 {
            let _ = t.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        }
        drop(t);
    }
    honest.join().expect("honest client");
    // The honest backup restores byte-identical, and the service still serves.
    let out = svc.path("h.out");
    assert!(svc
        .bulwark("honest")
        .restore("honest", &out, &[])
        .status
        .success());
    assert!(same_file(&out, &img));
    let log = svc.log_text();
    for reason in [
        "frame too large",
        "frame deadline passed",
        "unknown message type",
    ] {
        assert!(log.contains(reason), "no logged reason {reason:?}");
    }
}

#[test]
fn eight_clients_back_up_concurrently() {
    need_root!("eight_clients_back_up_concurrently");
    let svc = Arc::new(Service::start(&[]));
    let names: Vec<String> = (0..8).map(|i| format!("client{i}")).collect();
    for n in &names {
        svc.enroll(n);
    }
    let start = Instant::now();
    let handles: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (svc, n) = (svc.clone(), n.clone());
            std::thread::spawn(move || {
                let img = svc.path(&format!("{n}.img"));
                images::mixed(&img, 100 + i as u64, 8);
                let t = Instant::now();
                let (client, job) = (svc.bulwark(&n), format!("{n}-disk"));
                let o = client.backup(&job, &img, &[]);
                assert!(o.status.success(), "{n} failed");
                let secs = t.elapsed().as_secs_f64();
                let out = svc.path(&format!("{n}.out"));
                let o = client.restore(&job, &out, &[]);
                assert!(o.status.success());
                assert!(same_file(&img, &out), "{n}: restore differs");
                secs
            })
        })
        .collect();
    let secs: Vec<f64> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    eprintln!(
        "8 concurrent backups in {:.1}s; per client {secs:.2?}",
        start.elapsed().as_secs_f64()
    );
    let (min, max) = secs
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), s| (a.min(*s), b.max(*s)));
    // Fair share: nobody waits for everybody else to finish first.
    assert!(
        max <= min * 6.0 + 3.0,
        "unfair: fastest {min:.2}s, slowest {max:.2}s"
    );
    for n in &names {
        let l = svc.bulwark(n).list_json();
        assert_eq!(
            l["jobs"].as_array().unwrap().len(),
            1,
            "{n} sees other jobs"
        );
    }
}

/// Free bytes of the filesystem holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let st = bulwark_sys::statvfs(p).unwrap();
    st.blocks_available * st.frsize
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Issue 13 item 2: one client backing up under ever new job names filled a 3 GiB disk in
/// 11 s. With the default limits (a share of the repository's filesystem), the sprawling
/// client is refused with a message naming the limit, the disk keeps room, and another
/// client's backup succeeds.
#[test]
fn one_client_creating_many_jobs_is_refused_by_a_client_limit_and_another_clients_backup_succeeds()
{
    need_root!("one_client_creating_many_jobs_is_refused_by_a_client_limit_and_another_clients_backup_succeeds");
    let svc = Service::start_with(&[], Some(96), &[]);
    svc.enroll("sprawl");
    svc.enroll("honest");
    let img = svc.path("disk.img");
    let mut refused = None;
    for i in 0..22 {
        // A different image each time: 4 MiB of random data stored per backup.
        images::mixed(&img, 7000 + i, 8);
        let o = svc.bulwark("sprawl").backup(&format!("vm{i}"), &img, &[]);
        if !o.status.success() {
            refused = Some((i, o));
            break;
        }
    }
    let (i, o) = refused.expect("22 full backups under new job names were all accepted");
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("refused by a repository limit") && err.contains("client_limits"),
        "{err}"
    );
    assert!(
        ["new_bytes_per_day", "sealed_bytes", "new_jobs_per_day"]
            .iter()
            .any(|l| err.contains(l)),
        "{err}"
    );
    assert!(i >= 2, "refused too early, after {i} backups");
    // The disk keeps room: at most the daily share (25 %) plus one backup in flight.
    assert!(
        free_bytes(&svc.repo) > 56 << 20,
        "free {}",
        free_bytes(&svc.repo)
    );
    // The refused backup left no claim: its job name is free again.
    assert!(!svc.repo.join(format!("net/owners/vm{i}")).exists());
    images::mixed(&img, 1, 8);
    let o = svc.bulwark("honest").backup("web01", &img, &[]);
    assert!(o.status.success(), "the other client's backup failed");
    assert!(svc.logs("refused by a client limit"));
}

/// Issue 13 item 2: the number of new job names per client and day is limited too (small,
/// empty disks cost no bytes).
#[test]
fn new_job_names_per_client_and_day_are_limited() {
    need_root!("new_job_names_per_client_and_day_are_limited");
    let svc = Service::start_with(&[], None, &[("new_jobs_per_day", "3")]);
    svc.enroll("sprawl");
    let img = svc.path("zero.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let sprawl = svc.bulwark("sprawl");
    for i in 0..3 {
        let o = sprawl.backup(&format!("j{i}"), &img, &[]);
        assert!(o.status.success());
    }
    let o = sprawl.backup("j3", &img, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("new_jobs_per_day"), "{}", stderr(&o));
    // An existing job still takes backups.
    let o = sprawl.backup("j0", &img, &[]);
    assert!(o.status.success());
}

/// Issue 13 item 2: a `BeginBackup` that never sends data claimed the job name for good.
#[test]
fn a_backup_that_never_sends_data_releases_its_job_name() {
    need_root!("a_backup_that_never_sends_data_releases_its_job_name");
    let svc = Service::start(&[]);
    svc.enroll("squatter");
    svc.enroll("owner");
    let mut c = Conn::session(
        &svc.config("squatter"),
        &RemoteAddr::parse(&svc.addr).unwrap(),
    )
    .unwrap();
    c.send(&Msg::BeginBackup(bulwark_protocol::BackupRequest {
        job: "payroll".into(),
        disk_size: 1 << 20,
        block_size: 0,
        compression_level: 1,
        force_full: false,
    }))
    .unwrap();
    assert!(matches!(c.recv().unwrap(), Msg::BackupReady(_)));
    assert!(svc.repo.join("net/owners/payroll").exists());
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while svc.repo.join("net/owners/payroll").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !svc.repo.join("net/owners/payroll").exists(),
        "the name stayed claimed"
    );
    let img = svc.path("d.img");
    images::mixed(&img, 3, 2);
    let o = svc.bulwark("owner").backup("payroll", &img, &[]);
    assert!(o.status.success());
    assert!(svc.logs("released the unused job name"));
}

/// Issue 13 "typed errors", issue 12 item 6: on a full server disk the client saw "Broken
/// pipe" and the reason was only in the server's log. It now gets RepositoryFull, exit code
/// 2 and what to do, and nothing of the backup is left behind.
#[test]
fn a_full_repository_disk_is_reported_to_the_client_as_repository_full() {
    need_root!("a_full_repository_disk_is_reported_to_the_client_as_repository_full");
    let svc = Service::start_with(
        &[],
        Some(24),
        &[("new_bytes_per_day", "\"1T\""), ("sealed_bytes", "\"1T\"")],
    );
    svc.enroll("alice");
    let img = svc.path("big.img");
    let mut rng = Rng::new(99);
    std::fs::write(&img, rng.bytes(64 << 20)).unwrap();
    let o = svc.bulwark("alice").backup("big", &img, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("the repository is full"), "{err}");
    assert!(err.contains("free space"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    let left: Vec<_> = std::fs::read_dir(svc.repo.join("incoming"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "left in incoming/: {left:?}");
    assert!(svc.logs("refused (repository full)"));
}

/// A running `bulwark export` of a client, stopped with SIGTERM on drop.
struct NetExport(Child);

impl Drop for NetExport {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Starts `bulwark export` of `job` (point `point`) through the service as the client `c`,
/// with `extra` options (a key), and waits for its socket.
fn net_export(
    svc: &Service,
    c: &bulwark_testkit::serve::Client,
    job: &str,
    point: &str,
    sock: &Path,
    extra: &[&str],
) -> NetExport {
    let nbd = format!("unix:{}", sock.display());
    let child = c
        .command(
            &[
                &[
                    "export", "--repo", &svc.addr, "--job", job, "--point", point,
                ][..],
                extra,
                &["--nbd", &nbd],
            ]
            .concat(),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let e = NetExport(child);
    let end = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(
            Instant::now() < end,
            "no export socket; log: {}",
            svc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    e
}

#[test]
fn export_over_the_network_serves_a_full_an_incremental_and_a_synthetic_full_to_their_owner_only() {
    need_root!("export_over_the_network_serves_a_full_an_incremental_and_a_synthetic_full_to_their_owner_only");
    if !bulwark_testkit::require_tools(
        "export_over_the_network_serves_a_full_an_incremental_and_a_synthetic_full_to_their_owner_only",
        &["qemu-img"],
    ) {
        return;
    }
    let svc = Service::start(&[]);
    svc.enroll("alice");
    svc.enroll("bob");
    let img = svc.path("disk.img");
    images::mixed(&img, 11, 16);
    let alice = svc.bulwark("alice");
    let full = alice.backup_json("vm1", &img, &["--block-size", "64K"]);
    let full_img = svc.path("full.img");
    std::fs::copy(&img, &full_img).unwrap();
    change(&img, 12);
    let inc = alice.backup_json("vm1", &img, &[]);
    assert_eq!(inc["kind"], "incremental");
    // A synthetic full built on the repository from the incremental.
    let o = svc.admin(&["--json", "synthesize", "--job", "vm1", s(&svc.repo)]);
    assert!(o.status.success());
    let points = [
        (
            full["point"].as_str().unwrap().to_string(),
            full_img.clone(),
        ),
        (inc["point"].as_str().unwrap().to_string(), img.clone()),
        ("latest".to_string(), img.clone()),
    ];
    let list = alice.list_json();
    assert!(list.to_string().contains("synthetic-full"), "{list}");
    for (i, (point, src)) in points.iter().enumerate() {
        let sock = svc.path(&format!("net{i}.sock"));
        let e = net_export(&svc, &alice, "vm1", point, &sock, &[]);
        eprintln!("point {point}:");
        images::qemu_compare(src, &format!("nbd+unix:///?socket={}", sock.display()));
        drop(e);
        assert!(!sock.exists());
    }
    // A flipped byte in a stored block of the full: reading that block through the network
    // export fails, its neighbours read (the client checks every block it receives).
    let full_id = full["point"].as_str().unwrap();
    let file = std::fs::read_dir(svc.repo.join("store/vm1"))
        .unwrap()
        .map(|d| d.unwrap().path().join(format!("{full_id}.bwrp")))
        .find(|p| p.exists())
        .expect("the full's file");
    let r = bulwark_format::PointReader::open(std::fs::File::open(&file).unwrap()).unwrap();
    let (e, bs) = (r.map[10], u64::from(r.meta.block_size));
    drop(r);
    system::flip_byte(&file, e.offset + 7);
    let sock = svc.path("damaged.sock");
    let _e = net_export(&svc, &alice, "vm1", full_id, &sock, &[]);
    let start = e.block.0 * bs;
    for (off, ok) in [
        (start - 4096, true),
        (start, false),
        (start + bs - 4096, false),
        (start + bs, true),
    ] {
        let o = Command::new("qemu-io")
            .args(["-r", "-f", "raw", "-c", &format!("read {off} 4k")])
            .arg(format!("nbd+unix:///?socket={}", sock.display()))
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert_eq!(!text.contains("failed"), ok, "read at {off}: {text}");
    }
    drop(_e);
    // Bob may not read alice's job: refused before anything is served.
    let o = svc.client(
        "bob",
        &[
            "export",
            "--repo",
            &svc.addr,
            "--job",
            "vm1",
            "--nbd",
            &format!("unix:{}", svc.path("bob.sock").display()),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no restore points of yours"), "{err}");
    assert!(!svc.path("bob.sock").exists());
    assert!(svc.logs("which it does not own"));
}

/// Issue 17: exports through the service of encrypted points, symmetric and write-only: a
/// full, an incremental and a synthetic full the repository built from them (ciphertext of
/// two sessions, cloned), each byte-identical with the client's key. The service sends the
/// sessions and holds no key; without the key, or with a key for a plain point, the export is
/// refused before anything is served.
#[test]
fn export_over_the_network_decrypts_encrypted_points_with_the_clients_key() {
    let t = "export_over_the_network_decrypts_encrypted_points_with_the_clients_key";
    need_root!(t);
    if !bulwark_testkit::require_tools(t, &["qemu-img"]) {
        return;
    }
    const PASS: &str = "correct horse battery";
    let svc = Service::start(&[]);
    svc.enroll("alice");
    let (alice, alice_pw) = (svc.bulwark("alice"), svc.bulwark("alice").passphrase(PASS));
    let (sym, private, public) = (
        svc.path("sym.key"),
        svc.path("restore.key"),
        svc.path("client.pub"),
    );
    assert!(alice_pw
        .run(&["key", "create", "--out", s(&sym)])
        .status
        .success());
    let o = alice_pw.run(&bulwark_testkit::keys::write_only_args(
        s(&private),
        s(&public),
    ));
    assert!(o.status.success());
    let refused = |job: &str, extra: &[&str]| {
        let sock = svc.path("refused.sock");
        let nbd = format!("unix:{}", sock.display());
        let o = alice_pw.run(
            &[
                &["export", "--repo", &svc.addr, "--job", job][..],
                extra,
                &["--nbd", &nbd],
            ]
            .concat(),
        );
        assert!(!o.status.success());
        assert!(!sock.exists(), "nothing is served");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    for (job, seed, write, read) in [
        ("sym", 21, ["--key", s(&sym)], ["--key", s(&sym)]),
        (
            "wo",
            22,
            ["--public-key", s(&public)],
            ["--restore-key", s(&private)],
        ),
    ] {
        let img = svc.path(&format!("{job}.img"));
        images::mixed(&img, seed, 16);
        let full =
            alice_pw.backup_json(job, &img, &[&["--block-size", "64K"][..], &write].concat());
        let full_img = svc.path(&format!("{job}-full.img"));
        std::fs::copy(&img, &full_img).unwrap();
        change(&img, seed + 10);
        let inc = alice_pw.backup_json(job, &img, &write);
        assert_eq!(inc["kind"], "incremental");
        let o = svc.admin(&["--json", "synthesize", "--job", job, s(&svc.repo)]);
        assert!(o.status.success());
        for (i, (point, src)) in [
            (full["point"].as_str().unwrap(), &full_img),
            (inc["point"].as_str().unwrap(), &img),
            ("latest", &img),
        ]
        .into_iter()
        .enumerate()
        {
            let sock = svc.path(&format!("{job}{i}.sock"));
            let e = net_export(&svc, &alice_pw, job, point, &sock, &read);
            eprintln!("{job} point {point}:");
            images::qemu_compare(src, &format!("nbd+unix:///?socket={}", sock.display()));
            drop(e);
            assert!(!sock.exists());
        }
        let e = refused(job, &[]);
        assert!(
            e.contains("is encrypted") && e.contains("--restore-key"),
            "{e}"
        );
    }
    // The wrong kind of key, and a key for a point that is not encrypted.
    let e = refused("wo", &["--key", s(&sym)]);
    assert!(e.contains("write-only mode"), "{e}");
    let plain = svc.path("plain.img");
    images::mixed(&plain, 23, 4);
    alice.backup_json("plain", &plain, &[]);
    let e = refused("plain", &["--key", s(&sym)]);
    assert!(e.contains("not encrypted"), "{e}");
}
