//! Bodies of the fuzz targets, one function each. `fuzz_targets/*.rs` hand them libFuzzer's
//! input; `tests/seeds.rs` replays the committed seeds (`seeds/<target>/`) through them in an
//! ordinary `cargo test`. Each function panics only when it finds a bug.

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;

use bulwark_format::{
    align_up, BlockDecoder, Header, PointMeta, PointReader, Trailer, ALIGN, ENTRY_LEN, HEADER_LEN,
    TRAILER_LEN,
};
use bulwark_immut_msg::{read_frame as read_immut_frame, Request, Response};
use bulwark_protocol::{read_frame, write_msg, FrameBuf, Msg, MsgType};

/// The network protocol: any byte stream, read as frames and decoded as messages, gives
/// messages or errors, never a panic, a hang or an allocation beyond the frame limits; what
/// decodes re-encodes to a frame that decodes to the same message.
pub fn decode_msg(data: &[u8]) {
    let mut r = data;
    let mut fb = FrameBuf::default();
    while read_frame(&mut r, &mut fb, |_| {}).is_ok() {
        if let Ok(m) = fb.msg() {
            let mut v = Vec::new();
            write_msg(&mut v, &m).expect("a decoded message encodes");
            let mut fb2 = FrameBuf::default();
            read_frame(&mut &v[..], &mut fb2, |_| {}).expect("re-encoded frame reads");
            assert_eq!(fb2.msg().expect("re-encoded message decodes"), m);
        }
    }
    // As the payload of every type.
    if let Some((&t, payload)) = data.split_first() {
        if let Some(ty) = MsgType::from_code(t) {
            let _ = Msg::decode(ty, payload);
        }
    }
}

/// The immutability service's socket messages (`bulwark_immut_msg`): the input as one payload
/// decoded as a request (what the root service reads from the service user) and as a response
/// (what clients read), then as a stream of frames each decoded as a request. A decoded
/// request re-encodes to exactly its input (one encoding per request, so nothing the service
/// logs or audits differs from what it acted on); a decoded response re-encodes to a payload
/// that decodes to the same response.
pub fn immut_msg(data: &[u8]) {
    if let Ok(req) = Request::decode(data) {
        assert_eq!(req.encode(), data, "request {req:?} re-encodes differently");
    }
    if let Ok(resp) = Response::decode(data) {
        let again = Response::decode(&resp.encode()).expect("a re-encoded response decodes");
        assert_eq!(again, resp);
    }
    let mut r = data;
    while let Ok(payload) = read_immut_frame(&mut r) {
        if let Ok(req) = Request::decode(&payload) {
            assert_eq!(req.encode(), payload);
        }
    }
}

/// The four-eyes approval statement (`bulwark_approval`), which root hands to the service
/// and approvers sign: any bytes decode to a statement or an error, never a panic or an
/// allocation beyond the input; a statement that decodes re-encodes to exactly its input
/// (canonical: what was signed is what is acted on); and checking signatures given as the
/// input's halves never panics and never approves (no configured key made them).
pub fn approval_statement(data: &[u8]) {
    if let Ok(s) = bulwark_approval::Statement::decode(data) {
        assert_eq!(
            s.encode().as_bytes(),
            data,
            "statement re-encodes differently"
        );
        assert!(s.validate().is_ok());
    }
    thread_local! {
        static APPROVERS: bulwark_approval::Approvers = bulwark_approval::Approvers::parse(
            &[
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINFHf6JXDKgeNNmZcdsHFH9rPT7b5+h5bai+Y3zq+9KJ alice".into(),
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHw+zqruzzldKYG0UXQwBRtu/R1X+FxKMUU9fR/D241N bob".into(),
            ],
            2,
        )
        .expect("valid test approvers");
    }
    let (a, b) = data.split_at(data.len() / 2);
    APPROVERS.with(|ap| assert!(ap.check(a, &[b, a]).is_err(), "random bytes approved"));
}

/// Offsets of the compact input of [`point_reader`].
const IN_MODE: usize = 0;
const IN_HEADER: usize = 1;
const IN_PAD_AT: usize = 81;
const IN_TAIL: usize = 82;
/// Mode bits.
pub const FIX_HEADER_CHECK: u8 = 1;
pub const FIX_TRAILER: u8 = 2;
pub const DIRTY_HEADER_PADDING: u8 = 4;
const HEADER_FIXED: usize = 48;
const ROOT_CONTEXT: &str = "bulwark 2026-11 restore point v1 root digest";

thread_local! {
    static SCRATCH: RefCell<Option<File>> = const { RefCell::new(None) };
}

/// Expands the compact input of [`point_reader`] into the file it describes:
/// byte 0 mode bits, bytes 1..81 the header's first 80 bytes (fields and check), byte 81
/// where a dirty header padding byte goes, then everything from file offset 4096 on (data, map, metadata, trailer).
/// With [`FIX_HEADER_CHECK`] the header's BLAKE3 check is computed; with [`FIX_TRAILER`] the
/// trailer is re-encoded from its offsets with a correct check and root digest. The service
/// user who writes a file can compute both, so checksums must not be what stops a bad file;
/// the fix-ups let the fuzzer reach the checks behind them.
pub fn point_file(data: &[u8]) -> Vec<u8> {
    let mode = data.get(IN_MODE).copied().unwrap_or(0);
    let tail = data.get(IN_TAIL..).unwrap_or(&[]);
    let mut f = vec![0u8; HEADER_LEN as usize + tail.len()];
    let fixed = data
        .get(IN_HEADER..IN_PAD_AT.min(data.len()))
        .unwrap_or(&[]);
    f[..fixed.len()].copy_from_slice(fixed);
    if mode & FIX_HEADER_CHECK != 0 {
        let check = blake3::hash(&f[..HEADER_FIXED]);
        f[HEADER_FIXED..HEADER_FIXED + 32].copy_from_slice(check.as_bytes());
    }
    if mode & DIRTY_HEADER_PADDING != 0 {
        let at = 80 + usize::from(data.get(IN_PAD_AT).copied().unwrap_or(0)) * 15;
        f[at] = 1;
    }
    f[HEADER_LEN as usize..].copy_from_slice(tail);
    if mode & FIX_TRAILER != 0 && f.len() >= HEADER_LEN as usize + TRAILER_LEN {
        let end = f.len() - TRAILER_LEN;
        let u64_at = |at: usize| u64::from_le_bytes(f[end + at..end + at + 8].try_into().unwrap());
        let mut t = Trailer {
            map_offset: u64_at(16),
            map_count: u64_at(24),
            meta_offset: u64_at(32),
            meta_len: u64_at(40),
            root_digest: bulwark_format::Digest(f[end + 48..end + 80].try_into().unwrap()),
        };
        let region = |off: u64, len: Option<u64>| {
            let start = usize::try_from(off).ok()?;
            let n = usize::try_from(len?).ok()?;
            f.get(start..start.checked_add(n)?.min(end).max(start))
                .filter(|s| s.len() == n)
        };
        let map = region(t.map_offset, t.map_count.checked_mul(ENTRY_LEN as u64));
        let meta = region(t.meta_offset, Some(t.meta_len));
        if let (Some(map), Some(meta)) = (map, meta) {
            let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
            h.update(&f[..HEADER_FIXED]);
            h.update(&(meta.len() as u64).to_le_bytes());
            h.update(meta);
            h.update(map);
            t.root_digest = h.finalize().into();
        }
        f[end..].copy_from_slice(&t.encode());
    }
    f
}

/// Builds the compact input of [`point_reader`] from a whole restore-point file (for seeds).
pub fn compact_point(file: &[u8], mode: u8) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(&file[..80]);
    v.push(0);
    v.extend_from_slice(&file[HEADER_LEN as usize..]);
    v
}

/// The restore-point reader the root service runs on files the service user supplies before
/// sealing them (`PointReader::open`, then `check_padding`), and the reads verify and restore
/// make (`read_stored`, `read_stored_padded`, `BlockDecoder::decode`). Input: see
/// [`point_file`]. Checked: no panic or unbounded allocation; a file that opens keeps every
/// own block inside the data region; `check_padding` passes only when every byte of the data
/// region outside the blocks is zero; a dirty header padding byte never opens; metadata that
/// decodes re-encodes to the same bytes.
pub fn point_reader(data: &[u8]) {
    let bytes = point_file(data);
    let mode = data.first().copied().unwrap_or(0);
    // The immutability service's fallback for huge maps decodes the parts on their own.
    let _ = Header::decode(&bytes);
    if let Some(t) = bytes
        .len()
        .checked_sub(TRAILER_LEN)
        .and_then(|end| Trailer::decode(&bytes[end..]).ok())
    {
        let meta = usize::try_from(t.meta_offset).ok().and_then(|s| {
            let e = s.checked_add(usize::try_from(t.meta_len).ok()?)?;
            bytes.get(s..e)
        });
        if let Some(m) = meta {
            if let Ok(pm) = PointMeta::decode(m) {
                assert_eq!(pm.encode(), m, "metadata re-encodes differently");
            }
        }
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let file = s.get_or_insert_with(|| tempfile::tempfile().expect("a scratch file"));
        file.set_len(0).expect("truncating the scratch file");
        file.write_all_at(&bytes, 0)
            .expect("writing the scratch file");
        let opened = PointReader::open(file.try_clone().expect("dup"));
        if mode & DIRTY_HEADER_PADDING != 0 {
            assert!(opened.is_err(), "a file with dirty header padding opened");
        }
        if let Ok(r) = opened {
            check_opened(&r, &bytes);
        }
    });
}

fn check_opened(r: &PointReader, bytes: &[u8]) {
    let t = &r.trailer;
    assert!(t.map_offset >= HEADER_LEN && t.map_offset.is_multiple_of(ALIGN));
    assert!(t.meta_offset + t.meta_len + TRAILER_LEN as u64 == bytes.len() as u64);
    let mut covered = vec![false; (t.map_offset - HEADER_LEN) as usize];
    let mut spans = Vec::new();
    for e in r.map.iter().filter(|e| e.file_ref == 0) {
        let end = e.offset.checked_add(u64::from(e.stored_len));
        assert!(
            e.offset >= HEADER_LEN && end.is_some_and(|end| end <= t.map_offset),
            "block {} at {} (+{}) outside the data region ending at {}",
            e.block,
            e.offset,
            e.stored_len,
            t.map_offset
        );
        let (s, n) = ((e.offset - HEADER_LEN) as usize, e.stored_len as usize);
        covered[s..s + n].iter_mut().for_each(|c| *c = true);
        spans.push((e.offset, align_up(end.unwrap())));
    }
    let data = &bytes[HEADER_LEN as usize..t.map_offset as usize];
    let clean = data.iter().zip(&covered).all(|(&b, &c)| c || b == 0);
    spans.sort_unstable();
    let disjoint = spans.windows(2).all(|w| w[0].1 <= w[1].0);
    match r.check_padding() {
        Ok(()) => assert!(
            clean,
            "check_padding passed a non-zero byte outside every block"
        ),
        Err(e) => assert!(
            !clean || !disjoint,
            "check_padding refused a clean file: {e}"
        ),
    }
    for (a, b) in r.gaps() {
        assert!(HEADER_LEN <= a && a < b && b <= t.map_offset);
    }
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut dec = BlockDecoder::new().expect("a zstd context");
    for e in r.map.iter().filter(|e| e.file_ref == 0) {
        let stored = r
            .read_stored(e, &mut buf)
            .expect("an own block reads")
            .to_vec();
        let _ = dec.decode(e, &stored, &mut out);
        let _ = r.read_stored_padded(e, &mut buf);
    }
}

/// Mode bit of [`encrypted_block`]: the harness seals the input's payload itself with the
/// fixed key before reading it back, so the checks after authentication are reached.
pub const SEAL_PAYLOAD: u8 = 1;
const ENC_HEAD: usize = 1 + 8 + 4 + 1 + 32;

/// The encrypted block reader (docs/encryption.md): a mode byte, block number (8), plain
/// length (4, bounded to 1 MiB), entry flags (1), keyed hash (32), then the stored bytes (or,
/// with [`SEAL_PAYLOAD`], the payload the harness seals). Checked besides "no panic": bytes
/// the harness did not seal never authenticate; what it sealed opens to exactly the payload;
/// a decoded block has the entry's plain length and keyed hash; the encryption record, the
/// wrapped-key and key-file decoders never panic, and a record that decodes re-encodes to
/// the same bytes.
pub fn encrypted_block(data: &[u8]) {
    use bulwark_crypto::{associated_data, BlockKey, SessionSealer};
    use bulwark_format::{BlockNo, Digest, EncryptionRecord, MapEntry, ENTRY_FLAG_ENCRYPTED};
    if let Ok(r) = EncryptionRecord::decode(data) {
        assert_eq!(r.encode(), data, "a record re-encodes to its bytes");
    }
    let _ = bulwark_crypto::unwrap_symmetric(&[7; 32], &[1; 16], data);
    let _ = bulwark_crypto::unwrap_x25519(&[7; 32], data);
    let _ = bulwark_crypto::PublicKeyFile::decode(data, "fuzz");
    let _ = bulwark_crypto::KeyFile::decode(data, b"fuzz", "fuzz");
    if data.len() < ENC_HEAD {
        return;
    }
    let mode = data[0];
    let block = u64::from_le_bytes(data[1..9].try_into().expect("8"));
    let plain_len = u32::from_le_bytes(data[9..13].try_into().expect("4")) % (1 << 20) + 1;
    let flags = u32::from(data[13] & 1) | ENTRY_FLAG_ENCRYPTED;
    let keyed: [u8; 32] = data[14..46].try_into().expect("32");
    let rest = &data[ENC_HEAD..];
    let key = BlockKey::from_bytes([7; 32]);
    let ad = associated_data(block, plain_len, flags, &keyed);
    let mut stored = Vec::new();
    if mode & SEAL_PAYLOAD != 0 {
        let mut s = SessionSealer::new(&key).expect("randomness");
        s.seal(block, &ad, rest, &mut stored).expect("sealing");
    } else {
        stored.extend_from_slice(rest);
    }
    let mut payload = Vec::new();
    let opened = key.open(block, &ad, &stored, &mut payload);
    // An empty payload is never written (a block is at least one byte, stored or framed);
    // sealed, it is too short to be a block and is refused like anything unsealed.
    if mode & SEAL_PAYLOAD == 0 || rest.is_empty() {
        assert!(opened.is_err(), "bytes nobody sealed authenticated");
        return;
    }
    opened.expect("what was sealed opens");
    assert_eq!(payload, rest);
    let e = MapEntry {
        block: BlockNo(block),
        file_ref: 0,
        flags,
        offset: 4096,
        stored_len: stored.len() as u32,
        plain_len,
        plain_hash: Digest(keyed),
        stored_hash: Digest::of(&stored),
    };
    // The seeds hold the older change hash (plain bytes only); the positional one is checked
    // the same way.
    for positional in [false, true] {
        let change = bulwark_format::ChangeKey::new([9u8; 32], positional);
        if let Ok(mut dec) = BlockDecoder::new() {
            let mut out = Vec::new();
            if let Ok(plain) = dec.decode_decrypted(&e, &payload, &mut out, &change) {
                assert_eq!(plain.len(), plain_len as usize);
                assert_eq!(change.hash(block, plain).0, keyed);
            }
        }
    }
}
