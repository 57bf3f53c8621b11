//! Local users against the immutability service's socket (issue 13, item 1): a stranger's
//! connection flood cannot stop sealing, a trickled request is cut at its deadline, and
//! both are visible in the service's log, audit log and `status`. Runs as root with real
//! unprivileged users and the real service; skipped with a printed reason elsewhere.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_format::PointId;
use bulwark_testkit::immutd::Immutd;
use common::*;

/// Perl (in every Debian base system) as the flooding user: a storm of connects, then
/// `HOLD` connections held open for `SECS`, with one byte written to each every 3 s when
/// `TRICKLE` is 1; prints counts.
const FLOOD: &str = r#"
use IO::Socket::UNIX; use Time::HiRes qw(time sleep);
$SIG{PIPE} = 'IGNORE'; $| = 1;
my ($path, $storm, $hold, $secs, $trickle) = @ARGV;
my $n = 0; my $end = time + $storm;
while (time < $end) {
    my $s = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM) or next;
    $n++; close $s;
}
print "storm=$n\n";
my @c;
for (1 .. $hold) {
    my $s = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM);
    push @c, $s if $s;
}
print "held=" . scalar(@c) . "\n";
my $alive = 0; $end = time + $secs;
while (time < $end) {
    $alive = 0;
    for my $s (@c) { $alive++ if !$trickle || defined syswrite($s, "\x01"); }
    sleep 3;
}
print "alive=$alive\n";
"#;

/// Perl as a permitted user: a Status request trickled one byte every 3 s; prints when the
/// service answered or closed the connection.
const TRICKLE: &str = r#"
use IO::Socket::UNIX; use IO::Select; use Time::HiRes qw(time sleep);
$SIG{PIPE} = 'IGNORE'; $| = 1;
my ($path) = @ARGV;
my $s = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM) or die "connect: $!";
my $t = time;
my $req = pack("V", 2) . "\x01\x05";
my $sel = IO::Select->new($s);
for my $b (split //, $req) {
    last unless defined syswrite($s, $b);
    last if $sel->can_read(3);
}
$sel->can_read(30);
my $got = time - $t;
my $buf = ''; sysread($s, $buf, 65536);
printf "cut_after=%.1f\nanswer=%s\n", $got, unpack("H*", $buf);
"#;

fn perl_as(u: &TestUser, script: &str, args: &[&str]) -> Child {
    u.cmd("perl")
        .arg("-e")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills the child on drop (a failed assertion must not leave a flood running).
struct Kill(Option<Child>);

impl Kill {
    fn wait_output(mut self) -> String {
        let mut c = self.0.take().unwrap();
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let st = c.wait().unwrap();
        assert!(st.success(), "perl failed: {out}{err}");
        out
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn value(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {out:?}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// An ext4 rig with its service started, and the service's socket; `None` after a printed
/// SKIP.
fn started_rig(test: &str) -> Option<(Rig, Immutd, PathBuf)> {
    let rig = ext4_rig(test, &["mkfs.ext4", "useradd", "perl"])?;
    let svc = rig.start();
    let sock = rig.socket();
    Some((rig, svc, sock))
}

/// `bulwark-immutctl status` as root.
fn root_status(sock: &std::path::Path) -> CtlResult {
    CtlResult::from(
        Command::new(&*IMMUTCTL)
            .arg("--socket")
            .arg(sock)
            .arg("status")
            .output()
            .unwrap(),
    )
    .ok()
}

#[test]
fn a_stranger_holding_connections_cannot_stop_sealing() {
    let test = "a_stranger_holding_connections_cannot_stop_sealing";
    let Some((rig, svc, sock)) = started_rig(test) else {
        return;
    };
    let stranger = TestUser::create();
    // Three seconds of connect storm, then 64 connections (four times the slots) held
    // for 20 s with a byte every 3 s: the attack that stopped every seal before.
    let flood = Kill(Some(perl_as(
        &stranger,
        FLOOD,
        &[sock.to_str().unwrap(), "3", "64", "20", "1"],
    )));
    std::thread::sleep(Duration::from_secs(4));
    let start = Instant::now();
    let mut sealed = 0;
    while start.elapsed() < Duration::from_secs(15) {
        let t = Instant::now();
        let (_, r) = seal_new(&rig, "vm-1", None, PointId::NONE);
        let r = r.ok();
        assert!(r.get("sealed_path").is_some(), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a seal during the flood took {:?}",
            t.elapsed()
        );
        sealed += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(sealed >= 4, "only {sealed} seals during the flood");
    let out = flood.wait_output();
    eprintln!("flood: {out}");
    let storm = value(&out, "storm");
    assert!(
        storm > 100,
        "the storm made only {storm} connections: {out}"
    );
    assert_eq!(
        value(&out, "alive"),
        0,
        "a stranger's connection was kept open: {out}"
    );

    // Visible in status, in the service's log and in the audit log, which stays bounded.
    let st = root_status(&sock);
    let refused = st.int("refused_strangers") as u64;
    assert!(
        refused >= storm + 64,
        "status counted {refused} refusals: {st:?}"
    );
    assert!(st.out.contains("refused_busy=0"), "{st:?}");
    let log = svc.log();
    let who = format!("uid={}", stranger.uid);
    assert!(
        log.lines()
            .any(|l| l.contains("refused-connection") && l.contains(&who)),
        "the service's log does not name the stranger:\n{log}"
    );
    assert!(
        log.contains("connections-suppressed"),
        "the flood is not summed up in the log:\n{log}"
    );
    let audit = std::fs::read_to_string(rig.setup.state_dir().join("audit.log")).unwrap();
    let lines = audit.lines().filter(|l| l.contains("connection")).count();
    assert!(
        lines <= 2 * 20 + 10,
        "{lines} audit lines for {refused} refused connections: not rate-limited"
    );
    drop(svc);
}

#[test]
fn a_trickled_request_is_cut_at_its_deadline_and_one_uid_cannot_take_every_slot() {
    let test = "a_trickled_request_is_cut_at_its_deadline_and_one_uid_cannot_take_every_slot";
    let Some((rig, svc, sock)) = started_rig(test) else {
        return;
    };
    // The service user trickles a 6-byte request, one byte every 3 s: an idle timeout
    // restarted by every byte would wait 15 s and answer; the deadline cuts it at 10 s.
    let trickle = Kill(Some(perl_as(&rig.user, TRICKLE, &[sock.to_str().unwrap()])));
    // Meanwhile the same user opens 24 more: 11 reach its limit of 12, 8 wait for a slot,
    // the rest are answered Busy at once.
    std::thread::sleep(Duration::from_secs(1));
    let hold = Kill(Some(perl_as(
        &rig.user,
        FLOOD,
        &[sock.to_str().unwrap(), "0", "24", "8", "0"],
    )));
    std::thread::sleep(Duration::from_secs(3));
    // Root still gets a slot while the service user holds all of its own.
    let st = root_status(&sock);
    assert!(st.int("refused_busy") >= 1, "{st:?}");
    let out = trickle.wait_output();
    let cut = value(&out, "cut_after");
    assert!(
        (9..12).contains(&cut),
        "trickled request kept {cut} s: {out}"
    );
    drop(hold);
    let st = root_status(&sock);
    assert_eq!(st.int("requests_timed_out"), 1, "{st:?}");
    let log = svc.log();
    assert!(log.contains("request-deadline"), "{log}");
    assert!(log.contains("connection-limit"), "{log}");
    // Once the connections are gone, the user seals again.
    assert!(
        wait_for(40, || seal_new(&rig, "vm-1", None, PointId::NONE).1.code
            == 0),
        "the service user could not seal after its connections closed"
    );
    drop(svc);
}
