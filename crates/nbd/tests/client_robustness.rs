//! The NBD client against hostile servers: a server that closes mid-reply, sends a short
//! structured reply, an unknown reply type, a huge length, a stray cookie, an incomplete
//! read, a zero-length extent, or nothing at all. Each ends in a clean error, within the
//! timeout, and the connection is dead afterwards (no request gets partial data as whole).

mod common;

use std::time::{Duration, Instant};

use bulwark_nbd::{Client, ClientOptions, NbdUri};
use common::fake::{start, Misbehave, SIZE};

fn connect(sock: &std::path::Path) -> Client {
    Client::connect(
        &NbdUri::unix(sock, ""),
        &ClientOptions {
            timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn every_broken_reply_is_a_clean_error_without_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    for (how, says) in [
        (Misbehave::CloseMidReply, "closed"),
        (Misbehave::ShortChunk, "too short"),
        (Misbehave::UnknownType, "unknown reply type"),
        (Misbehave::HugeLength, "outside"),
        (Misbehave::Silent, "within"),
        (Misbehave::WrongCookie, "cookie"),
        (Misbehave::IncompleteRead, "only"),
    ] {
        let (sock, _h) = start(dir.path(), how);
        let c = connect(&sock);
        assert_eq!(c.size, SIZE);
        let t = Instant::now();
        let e = c.read_at(0, 1 << 20).unwrap_err().to_string();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{how:?} took {:?}",
            t.elapsed()
        );
        assert!(e.contains(says), "{how:?}: {e}");
        // The connection is dead: the next request fails at once too.
        let e2 = c.read_at(0, 4096).unwrap_err().to_string();
        assert!(!e2.is_empty(), "{how:?}");
        drop(c);
    }
}

#[test]
fn several_reads_in_flight_all_fail_when_the_connection_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, _h) = start(dir.path(), Misbehave::CloseMidReply);
    let c = connect(&sock);
    // Once the server has closed, later submissions are refused at once: both are errors.
    let mut tickets = Vec::new();
    for i in 0..8u64 {
        match c.submit_read_into(i << 20, vec![0u8; 1 << 20]) {
            Ok(t) => tickets.push(t),
            Err(e) => assert!(matches!(e, bulwark_nbd::NbdError::Closed { .. }), "{e}"),
        }
    }
    assert!(
        !tickets.is_empty(),
        "the first read is sent before anything breaks"
    );
    for t in tickets {
        assert!(c.wait(t).is_err());
    }
}

#[test]
fn a_zero_length_extent_is_refused_and_reads_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, _h) = start(dir.path(), Misbehave::ZeroExtent);
    let c = connect(&sock);
    let d = c.read_at(4096, 8192).unwrap();
    assert!(d.len() == 8192 && d.iter().all(|&b| b == 0x5a));
    let id = c.context_id("base:allocation").unwrap();
    let e = c.map(id, 0, SIZE).unwrap_err().to_string();
    assert!(e.contains("length 0"), "{e}");
}

#[test]
fn requests_beyond_the_export_are_refused_before_they_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, _h) = start(dir.path(), Misbehave::ZeroExtent);
    let c = connect(&sock);
    assert!(c.read_at(SIZE - 10, 11).is_err());
    assert!(c.read_at(u64::MAX - 1, 10).is_err());
    // Still usable.
    assert_eq!(c.read_at(SIZE - 10, 10).unwrap().len(), 10);
}
