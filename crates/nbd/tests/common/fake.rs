//! A small hostile NBD server for robustness tests: a correct fixed-newstyle negotiation
//! (structured replies, `base:allocation`, `NBD_OPT_GO`), then answers reads the way a
//! broken or malicious server would.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use bulwark_nbd::proto::*;

/// How the server misbehaves after the negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// Sends part of a read's data, then closes the connection.
    CloseMidReply,
    /// An OFFSET_DATA chunk of 4 bytes (shorter than its own offset field).
    ShortChunk,
    /// A chunk of reply type 0x7777 (not an error type).
    UnknownType,
    /// An OFFSET_DATA chunk that claims almost 4 GiB.
    HugeLength,
    /// Never answers.
    Silent,
    /// Answers with a cookie no request has.
    WrongCookie,
    /// Ends the read (DONE) after covering only half of it.
    IncompleteRead,
    /// A block-status chunk with an extent of length 0 (answers reads correctly).
    ZeroExtent,
}

pub const SIZE: u64 = 64 << 20;

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn reply_opt(s: &mut UnixStream, option: u32, kind: u32, data: &[u8]) {
    let h = OptionReply {
        option,
        kind,
        length: data.len() as u32,
    };
    s.write_all(&h.encode()).unwrap();
    s.write_all(data).unwrap();
}

fn negotiate(s: &mut UnixStream) -> bool {
    let mut g = Vec::new();
    g.extend_from_slice(&NBD_MAGIC.to_be_bytes());
    g.extend_from_slice(&IHAVEOPT.to_be_bytes());
    g.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&g).unwrap();
    let mut cf = [0u8; 4];
    if s.read_exact(&mut cf).is_err() {
        return false;
    }
    loop {
        let mut h = [0u8; OPTION_LEN];
        if s.read_exact(&mut h).is_err() {
            return false;
        }
        let o = OptionHeader::decode(&h).unwrap();
        let mut data = vec![0u8; o.length as usize];
        s.read_exact(&mut data).unwrap();
        match o.option {
            OPT_STRUCTURED_REPLY => reply_opt(s, o.option, REP_ACK, &[]),
            OPT_SET_META_CONTEXT => {
                let mut d = 1u32.to_be_bytes().to_vec();
                d.extend_from_slice(META_BASE_ALLOCATION.as_bytes());
                reply_opt(s, o.option, REP_META_CONTEXT, &d);
                reply_opt(s, o.option, REP_ACK, &[]);
            }
            OPT_GO => {
                let mut d = INFO_EXPORT.to_be_bytes().to_vec();
                d.extend_from_slice(&SIZE.to_be_bytes());
                d.extend_from_slice(&(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY).to_be_bytes());
                reply_opt(s, o.option, REP_INFO, &d);
                reply_opt(s, o.option, REP_ACK, &[]);
                return true;
            }
            _ => reply_opt(s, o.option, REP_ERR_UNSUP, &[]),
        }
    }
}

fn chunk(
    s: &mut UnixStream,
    flags: u16,
    kind: u16,
    cookie: u64,
    payload: &[u8],
) -> std::io::Result<()> {
    let h = StructuredReply {
        flags,
        kind,
        cookie,
        length: payload.len() as u32,
    };
    s.write_all(&h.encode())?;
    s.write_all(payload)
}

/// The last `NBD_REPLY_TYPE_OFFSET_DATA` chunk of a read: `offset` (8 bytes), then `data`.
fn offset_data(s: &mut UnixStream, cookie: u64, offset: &[u8], data: &[u8]) -> std::io::Result<()> {
    chunk(
        s,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        &[offset, data].concat(),
    )
}

fn serve(mut s: UnixStream, how: Misbehave) {
    if !negotiate(&mut s) {
        return;
    }
    loop {
        let mut h = [0u8; REQUEST_LEN];
        if s.read_exact(&mut h).is_err() {
            return;
        }
        let r = Request::decode(&h).unwrap();
        match r.kind {
            CMD_DISC => return,
            CMD_BLOCK_STATUS => {
                let e = if how == Misbehave::ZeroExtent {
                    vec![Extent {
                        length: 0,
                        flags: 0,
                    }]
                } else {
                    vec![Extent {
                        length: r.length,
                        flags: 0,
                    }]
                };
                let _ = chunk(
                    &mut s,
                    REPLY_FLAG_DONE,
                    REPLY_TYPE_BLOCK_STATUS,
                    r.cookie,
                    &encode_block_status(1, &e),
                );
            }
            CMD_READ => {
                let p = r.offset.to_be_bytes();
                let data = vec![0x5au8; r.length as usize];
                let res = match how {
                    Misbehave::ZeroExtent => offset_data(&mut s, r.cookie, &p, &data),
                    Misbehave::CloseMidReply => {
                        let h = StructuredReply {
                            flags: REPLY_FLAG_DONE,
                            kind: REPLY_TYPE_OFFSET_DATA,
                            cookie: r.cookie,
                            length: 8 + r.length,
                        };
                        let _ = s.write_all(&h.encode());
                        let _ = s.write_all(&p);
                        let _ = s.write_all(&data[..data.len() / 2]);
                        return;
                    }
                    Misbehave::ShortChunk => chunk(
                        &mut s,
                        REPLY_FLAG_DONE,
                        REPLY_TYPE_OFFSET_DATA,
                        r.cookie,
                        &[0, 0, 0, 0],
                    ),
                    Misbehave::UnknownType => {
                        chunk(&mut s, REPLY_FLAG_DONE, 0x7777, r.cookie, &[1, 2, 3])
                    }
                    Misbehave::HugeLength => {
                        let h = StructuredReply {
                            flags: REPLY_FLAG_DONE,
                            kind: REPLY_TYPE_OFFSET_DATA,
                            cookie: r.cookie,
                            length: 0xffff_fff0,
                        };
                        s.write_all(&h.encode()).and_then(|_| s.write_all(&p))
                    }
                    Misbehave::Silent => {
                        // Hold the connection open without a word until the client leaves.
                        let mut b = [0u8; 1];
                        let _ = s.read(&mut b);
                        return;
                    }
                    Misbehave::WrongCookie => offset_data(&mut s, r.cookie ^ 0xdead, &p, &data),
                    Misbehave::IncompleteRead => {
                        offset_data(&mut s, r.cookie, &p, &data[..data.len() / 2])
                    }
                };
                if res.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// A fake server on a socket in `dir`; serves connections until the test ends.
pub fn start(dir: &Path, how: Misbehave) -> (PathBuf, JoinHandle<()>) {
    let sock = dir.join(format!("fake-{how:?}.sock"));
    let l = UnixListener::bind(&sock).unwrap();
    let h = std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || serve(s, how));
        }
    });
    let _ = be32(&[0, 0, 0, 0]);
    (sock, h)
}
