//! The NBD server against real clients (qemu-img, qemu-io) and against a raw-socket client
//! that misbehaves: garbage, oversized options and requests, reads past the end, a thousand
//! requests in flight, a disconnect in the middle of a request. Whatever one connection does,
//! the export keeps serving the others.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bulwark_nbd::proto::*;
use bulwark_nbd::server::{BlockDevice, ExportOptions, Listen, ReadError, Server};
use bulwark_testkit::{require_tools, Rng};

/// A disk in memory: data, a zero range reported as a hole, one range that fails to read.
struct Mem {
    data: Vec<u8>,
    zero: (u64, u64),
    bad: Option<(u64, u64)>,
}

impl BlockDevice for Mem {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let end = offset + buf.len() as u64;
        if let Some((bs, be)) = self.bad {
            if offset < be && end > bs {
                let from = bs.max(offset);
                buf[..(from - offset) as usize]
                    .copy_from_slice(&self.data[offset as usize..from as usize]);
                return Err(ReadError {
                    offset: from,
                    len: be.min(end) - from,
                    errno: EIO,
                    message: "damaged".into(),
                });
            }
        }
        buf.copy_from_slice(&self.data[offset as usize..end as usize]);
        Ok(())
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, u32)>, ReadError> {
        let end = offset + len;
        let (zs, ze) = self.zero;
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let (next, flags) = if at < zs {
                (zs.min(end), 0)
            } else if at < ze {
                (ze.min(end), STATE_HOLE | STATE_ZERO)
            } else {
                (end, 0)
            };
            out.push((next - at, flags));
            at = next;
        }
        Ok(out)
    }
}

const MIB: u64 = 1 << 20;

fn disk(size: u64, zero: (u64, u64), bad: Option<(u64, u64)>) -> (Arc<Mem>, Vec<u8>) {
    let mut data = Rng::new(7).bytes(size as usize);
    data[zero.0 as usize..zero.1 as usize].fill(0);
    (
        Arc::new(Mem {
            data: data.clone(),
            zero,
            bad,
        }),
        data,
    )
}

/// A [`disk`] (no damaged range) and the same bytes in a raw image `src.raw` in `dir`, for
/// the real clients to compare the export with.
fn disk_and_image(dir: &Path, size: u64, zero: (u64, u64)) -> (Arc<Mem>, PathBuf) {
    let (dev, data) = disk(size, zero, None);
    let image = dir.join("src.raw");
    std::fs::write(&image, &data).unwrap();
    (dev, image)
}

/// A temporary folder holding a [`disk_and_image`], for a test that checks the export with
/// `qemu-img`; `None` after a printed SKIP when it is not installed.
fn qemu_img_disk(
    test: &str,
    size: u64,
    zero: (u64, u64),
) -> Option<(tempfile::TempDir, Arc<Mem>, PathBuf)> {
    if !require_tools(test, &["qemu-img"]) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (dev, image) = disk_and_image(dir.path(), size, zero);
    Some((dir, dev, image))
}

fn serve(dir: &Path, dev: Arc<Mem>) -> (Server, PathBuf) {
    let sock = dir.join("export.sock");
    let s = Server::start(&Listen::Unix(sock.clone()), dev, ExportOptions::default()).unwrap();
    (s, sock)
}

fn uri(sock: &Path) -> String {
    format!("nbd+unix:///?socket={}", sock.display())
}

/// A minimal client: fixed newstyle, structured replies, `base:allocation`, `NBD_OPT_GO`.
struct Client {
    s: UnixStream,
    size: u64,
    flags: u16,
}

fn option(s: &mut UnixStream, option: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let h = OptionHeader {
        option,
        length: data.len() as u32,
    };
    s.write_all(&h.encode()).unwrap();
    s.write_all(data).unwrap();
    let mut out = Vec::new();
    loop {
        let mut b = [0u8; OPTION_REPLY_LEN];
        s.read_exact(&mut b).unwrap();
        let r = OptionReply::decode(&b).unwrap();
        assert_eq!(r.option, option);
        let mut d = vec![0u8; r.length as usize];
        s.read_exact(&mut d).unwrap();
        let last = r.kind == REP_ACK || r.is_error();
        out.push((r.kind, d));
        if last {
            return out;
        }
    }
}

fn greet(sock: &Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g[0..8], &NBD_MAGIC.to_be_bytes());
    assert_eq!(&g[8..16], &IHAVEOPT.to_be_bytes());
    s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    s
}

impl Client {
    fn connect(sock: &Path) -> Client {
        let mut s = greet(sock);
        assert_eq!(option(&mut s, OPT_STRUCTURED_REPLY, &[])[0].0, REP_ACK);
        let mut q = 0u32.to_be_bytes().to_vec();
        q.extend_from_slice(&1u32.to_be_bytes());
        q.extend_from_slice(&(META_BASE_ALLOCATION.len() as u32).to_be_bytes());
        q.extend_from_slice(META_BASE_ALLOCATION.as_bytes());
        let r = option(&mut s, OPT_SET_META_CONTEXT, &q);
        assert_eq!(r[0].0, REP_META_CONTEXT, "base:allocation is offered");
        let mut go = 0u32.to_be_bytes().to_vec();
        go.extend_from_slice(&0u16.to_be_bytes());
        let r = option(&mut s, OPT_GO, &go);
        let info = &r
            .iter()
            .find(|(k, d)| *k == REP_INFO && d[0..2] == [0, 0])
            .unwrap()
            .1;
        let size = u64::from_be_bytes(info[2..10].try_into().unwrap());
        let flags = u16::from_be_bytes(info[10..12].try_into().unwrap());
        assert_eq!(r.last().unwrap().0, REP_ACK);
        Client { s, size, flags }
    }

    fn send(&mut self, kind: u16, cookie: u64, offset: u64, length: u32) {
        let r = Request {
            flags: 0,
            kind,
            cookie,
            offset,
            length,
        };
        self.s.write_all(&r.encode()).unwrap();
    }

    /// Reads the chunks of one structured reply: data pieces `(offset, bytes)` and errors
    /// `(errno, offset)`.
    fn reply(&mut self) -> Reply {
        read_reply(&mut self.s)
    }
}

type Reply = (u64, Vec<(u64, Vec<u8>)>, Vec<(u32, Option<u64>)>, Vec<u8>);

fn read_reply(s: &mut UnixStream) -> Reply {
    let mut data = Vec::new();
    let mut errors = Vec::new();
    let mut status = Vec::new();
    loop {
        let mut m = [0u8; 4];
        s.read_exact(&mut m).unwrap();
        assert_eq!(u32::from_be_bytes(m), STRUCTURED_REPLY_MAGIC);
        let mut h = [0u8; STRUCTURED_REPLY_LEN - 4];
        s.read_exact(&mut h).unwrap();
        let h = StructuredReply::decode_after_magic(&h);
        let mut p = vec![0u8; h.length as usize];
        s.read_exact(&mut p).unwrap();
        match h.kind {
            REPLY_TYPE_OFFSET_DATA => data.push((
                u64::from_be_bytes(p[0..8].try_into().unwrap()),
                p[8..].to_vec(),
            )),
            REPLY_TYPE_BLOCK_STATUS => status = p,
            REPLY_TYPE_NONE => {}
            REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
                let e = u32::from_be_bytes(p[0..4].try_into().unwrap());
                let n = u16::from_be_bytes(p[4..6].try_into().unwrap()) as usize;
                let off = (h.kind == REPLY_TYPE_ERROR_OFFSET)
                    .then(|| u64::from_be_bytes(p[6 + n..14 + n].try_into().unwrap()));
                errors.push((e, off));
            }
            k => panic!("unexpected chunk type {k}"),
        }
        if h.is_done() {
            return (h.cookie, data, errors, status);
        }
    }
}

fn qemu_compare(image: &Path, sock: &Path) {
    bulwark_testkit::images::qemu_compare(image, &uri(sock));
}

#[test]
fn qemu_img_reads_the_export_byte_identical_and_sees_its_zero_range_as_a_hole() {
    let t = "qemu_img_reads_the_export_byte_identical_and_sees_its_zero_range_as_a_hole";
    let Some((dir, dev, image)) = qemu_img_disk(t, 8 * MIB + 512, (2 * MIB, 5 * MIB)) else {
        return;
    };
    let (srv, sock) = serve(dir.path(), dev);
    qemu_compare(&image, &sock);
    let map = bulwark_testkit::images::qemu_map(&uri(&sock));
    let hole = map
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["start"] == 2 * MIB)
        .unwrap_or_else(|| panic!("no extent at 2 MiB in {map}"));
    assert_eq!(hole["length"], 3 * MIB, "{map}");
    assert_eq!(hole["zero"], true, "{map}");
    assert_eq!(hole["data"], false, "{map}");
    // Read-only: a write through qemu-io is refused.
    let o = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 1 0 4k"])
        .arg(uri(&sock))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() || text.contains("failed") || text.contains("read-only"),
        "{text}"
    );
    srv.stop();
    assert!(!sock.exists(), "the socket file is removed on stop");
}

#[test]
fn a_damaged_range_fails_exactly_and_its_neighbours_read() {
    let t = "a_damaged_range_fails_exactly_and_its_neighbours_read";
    let dir = tempfile::tempdir().unwrap();
    let bad = (3 * MIB, 4 * MIB);
    let (dev, data) = disk(6 * MIB, (0, 0), Some(bad));
    let (_srv, sock) = serve(dir.path(), dev);
    let mut c = Client::connect(&sock);
    // A read across the damaged range: good data up to it, an error at its offset, good
    // data after it.
    c.send(CMD_READ, 1, 2 * MIB, (3 * MIB) as u32);
    let (cookie, pieces, errors, _) = c.reply();
    assert_eq!(cookie, 1);
    assert_eq!(errors, vec![(EIO, Some(3 * MIB))]);
    for (off, d) in &pieces {
        assert!(
            *off + d.len() as u64 <= bad.0 || *off >= bad.1,
            "no data from the bad range"
        );
        assert_eq!(&data[*off as usize..*off as usize + d.len()], &d[..]);
    }
    let got: u64 = pieces.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(got, 2 * MIB, "every good byte of the request came back");
    // With a real client: the neighbours read, the damaged range does not.
    if !require_tools(t, &["qemu-io"]) {
        return;
    }
    let qio = |cmd: &str| {
        Command::new("qemu-io")
            .args(["-r", "-f", "raw", "-c", cmd])
            .arg(uri(&sock))
            .output()
            .unwrap()
    };
    for (off, ok) in [
        (bad.0 - 4096, true),
        (bad.0, false),
        (bad.1 - 4096, false),
        (bad.1, true),
    ] {
        let o = qio(&format!("read {off} 4k"));
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert_eq!(!text.contains("failed"), ok, "read at {off}: {text}");
    }
}

#[test]
fn bad_clients_get_errors_or_are_cut_off_and_the_export_keeps_serving_others() {
    let t = "bad_clients_get_errors_or_are_cut_off_and_the_export_keeps_serving_others";
    let dir = tempfile::tempdir().unwrap();
    let (dev, data) = disk(4 * MIB, (MIB, 2 * MIB), None);
    let image = dir.path().join("src.raw");
    std::fs::write(&image, &data).unwrap();
    let (srv, sock) = serve(dir.path(), dev);

    // Garbage instead of client flags and options: the connection is closed.
    let mut g = UnixStream::connect(&sock).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hello = [0u8; 18];
    g.read_exact(&mut hello).unwrap();
    g.write_all(&[0xff; 64]).unwrap();
    let mut rest = Vec::new();
    assert!(matches!(g.read_to_end(&mut rest), Ok(_) | Err(_)));
    // An option announcing 4 GiB of data: closed before anything is allocated.
    let mut o = greet(&sock);
    o.write_all(
        &OptionHeader {
            option: OPT_GO,
            length: u32::MAX,
        }
        .encode(),
    )
    .unwrap();
    let mut rest = Vec::new();
    let _ = o.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no reply to an oversized option");
    // An unknown option gets an error and negotiation goes on.
    let mut u = greet(&sock);
    assert_eq!(option(&mut u, 0x7777, &[1, 2, 3])[0].0, REP_ERR_UNSUP);
    assert_eq!(option(&mut u, OPT_LIST, &[]).last().unwrap().0, REP_ACK);
    drop(u);

    let mut c = Client::connect(&sock);
    assert_eq!(c.size, 4 * MIB);
    assert!(c.flags & TFLAG_READ_ONLY != 0, "the export is read-only");
    // Past the end, straddling the end, larger than the limit, a write: errors, and the
    // connection stays usable.
    c.send(CMD_READ, 10, 4 * MIB, 1);
    assert_eq!(c.reply().2, vec![(EINVAL, None)]);
    c.send(CMD_READ, 11, 4 * MIB - 10, 20);
    assert_eq!(c.reply().2, vec![(EINVAL, None)]);
    c.send(CMD_READ, 12, u64::MAX - 5, 10);
    assert_eq!(c.reply().2, vec![(EINVAL, None)]);
    c.send(CMD_BLOCK_STATUS, 13, 0, (4 * MIB) as u32);
    let (_, _, _, st) = c.reply();
    let (id, ex) = decode_block_status(&st).unwrap();
    assert_eq!(id, 1);
    assert_eq!(
        ex,
        vec![
            Extent {
                length: MIB as u32,
                flags: 0
            },
            Extent {
                length: MIB as u32,
                flags: STATE_HOLE | STATE_ZERO
            },
            Extent {
                length: 2 * MIB as u32,
                flags: 0
            },
        ]
    );
    let w = Request {
        flags: 0,
        kind: CMD_WRITE,
        cookie: 14,
        offset: 0,
        length: 8,
    };
    c.s.write_all(&w.encode()).unwrap();
    c.s.write_all(&[9u8; 8]).unwrap();
    assert_eq!(c.reply().2, vec![(EPERM, None)]);
    c.send(99, 15, 0, 1);
    assert_eq!(c.reply().2, vec![(EINVAL, None)]);

    // A thousand requests in flight, answered in any order, every one right.
    let mut w = c.s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut rng = Rng::new(3);
        let mut sent = Vec::new();
        for cookie in 0..1000u64 {
            let off = rng.below(4 * MIB - 65536);
            let len = 1 + rng.below(65536) as u32;
            let r = Request {
                flags: 0,
                kind: CMD_READ,
                cookie: 1000 + cookie,
                offset: off,
                length: len,
            };
            w.write_all(&r.encode()).unwrap();
            sent.push((off, len));
        }
        sent
    });
    let mut replies = std::collections::HashMap::new();
    for _ in 0..1000 {
        let (cookie, pieces, errors, _) = c.reply();
        assert!(errors.is_empty());
        replies.insert(cookie, pieces);
    }
    let sent = sender.join().unwrap();
    for (i, (off, len)) in sent.iter().enumerate() {
        let pieces = &replies[&(1000 + i as u64)];
        let mut got = vec![0u8; *len as usize];
        for (o, d) in pieces {
            let at = (o - off) as usize;
            got[at..at + d.len()].copy_from_slice(d);
        }
        assert_eq!(
            &got[..],
            &data[*off as usize..*off as usize + *len as usize]
        );
    }
    assert_eq!(replies.len(), 1000);

    // A read larger than the 32 MiB limit is refused; a write payload beyond it ends the
    // connection (its bytes cannot be skipped safely).
    c.send(CMD_READ, 16, 0, 64 << 20);
    let (_, _, e, _) = c.reply();
    assert_eq!(e.len(), 1);
    assert!(e[0].0 == EOVERFLOW || e[0].0 == EINVAL, "{e:?}");
    let mut big = Client::connect(&sock);
    big.send(CMD_WRITE, 17, 0, u32::MAX);
    let mut rest = Vec::new();
    let _ = big.s.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // Disconnects in the middle of a request header and of a write payload, a bad magic.
    let mut half = Client::connect(&sock);
    half.s
        .write_all(
            &Request {
                flags: 0,
                kind: CMD_READ,
                cookie: 1,
                offset: 0,
                length: 512,
            }
            .encode()[..13],
        )
        .unwrap();
    drop(half);
    let mut half = Client::connect(&sock);
    half.s
        .write_all(
            &Request {
                flags: 0,
                kind: CMD_WRITE,
                cookie: 1,
                offset: 0,
                length: 4096,
            }
            .encode(),
        )
        .unwrap();
    half.s.write_all(&[1; 100]).unwrap();
    drop(half);
    let mut magic = Client::connect(&sock);
    magic.s.write_all(&[0u8; REQUEST_LEN]).unwrap();
    let mut rest = Vec::new();
    let _ = magic.s.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // Through all that, the first connection and new ones keep being served.
    c.send(CMD_READ, 18, 100, 1000);
    let (_, pieces, errs, _) = c.reply();
    assert!(errs.is_empty());
    assert_eq!(pieces[0].1, &data[100..1100]);
    if require_tools(t, &["qemu-img"]) {
        qemu_compare(&image, &sock);
    }
    // Connections that ended are gone; the one still open is counted.
    let ok = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        srv.active_connections() == 1
    });
    assert!(ok, "{} connections still open", srv.active_connections());
    // A graceful stop ends the open connection too.
    srv.stop();
    let mut rest = Vec::new();
    let _ = c.s.read_to_end(&mut rest);
    assert!(!sock.exists());
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    // A socket file nobody listens on, as a killed export leaves it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let (dev, _) = disk(MIB, (0, 0), None);
    let srv = Server::start(
        &Listen::Unix(sock.clone()),
        dev.clone(),
        ExportOptions::default(),
    )
    .unwrap();
    let again = Server::start(
        &Listen::Unix(sock.clone()),
        dev.clone(),
        ExportOptions::default(),
    );
    assert!(
        again.is_err(),
        "a second export on a live socket is refused"
    );
    drop(srv);
    // Not a socket: refused, and the file is left alone.
    let f = dir.path().join("file");
    std::fs::write(&f, b"keep").unwrap();
    assert!(Server::start(&Listen::Unix(f.clone()), dev, ExportOptions::default()).is_err());
    assert_eq!(std::fs::read(&f).unwrap(), b"keep");
}

#[test]
fn a_tcp_export_serves_several_clients_at_once() {
    let t = "a_tcp_export_serves_several_clients_at_once";
    let Some((_dir, dev, image)) = qemu_img_disk(t, 6 * MIB, (MIB, 2 * MIB)) else {
        return;
    };
    let srv = Server::start(
        &Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        dev,
        ExportOptions::default(),
    )
    .unwrap();
    let uri = srv.listen().uri("");
    assert!(uri.starts_with("nbd://127.0.0.1:"), "{uri}");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (image, uri) = (image.clone(), uri.clone());
            std::thread::spawn(move || bulwark_testkit::images::qemu_compare(&image, &uri))
        })
        .collect();
    for r in runs {
        r.join().expect("qemu-img compare of the TCP export");
    }
    assert!(
        srv.stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
    srv.stop();
}
