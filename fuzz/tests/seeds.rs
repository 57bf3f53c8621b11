//! The fuzz targets' smoke run on stable: every committed seed (`seeds/<target>/`), every
//! message and restore point built here, and a few thousand deterministic mutations of each go
//! through the same functions libFuzzer calls. `BULWARK_WRITE_SEEDS=1` rewrites the seeds.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use bulwark_format::{
    BlockNo, Codec, Digest, FileRef, Header, MapEntry, PointId, PointKind, PointMeta, PointReader,
    PointWriter, RetentionClass, Stats, StoredBlock,
};
use bulwark_fuzz::{
    approval_statement, compact_point, decode_msg, encrypted_block, immut_msg, point_file,
    point_reader, DIRTY_HEADER_PADDING, FIX_HEADER_CHECK, FIX_TRAILER, SEAL_PAYLOAD,
};
use bulwark_immut_msg::{
    ErrorCode, FileInfo, FileState, Request, Response, StatusInfo, Target, TimePreview,
};

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

fn committed(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = fs::read_dir(seeds_dir(target))
        .unwrap_or_else(|e| panic!("seeds/{target}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| fs::read(p).unwrap()).collect()
}

/// Writes `made` as the seeds of `target` when asked to; otherwise checks that they are
/// committed, so the fuzzer starts from every message kind.
fn sync_seeds(target: &str, made: &[(String, Vec<u8>)]) {
    let dir = seeds_dir(target);
    if std::env::var_os("BULWARK_WRITE_SEEDS").is_some() {
        fs::create_dir_all(&dir).unwrap();
        for (name, b) in made {
            fs::write(dir.join(name), b).unwrap();
        }
    }
    for (name, b) in made {
        let on_disk = fs::read(dir.join(name)).unwrap_or_default();
        assert_eq!(
            &on_disk, b,
            "seeds/{target}/{name} is missing or stale: run with BULWARK_WRITE_SEEDS=1"
        );
    }
}

/// xorshift64*: deterministic mutations, the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs `f` on each input and on `per_input` mutations of it (byte flips, small overwrites
/// with interesting values, truncations, insertions).
fn replay(inputs: &[Vec<u8>], per_input: usize, f: fn(&[u8]), protect: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for input in inputs {
        f(input);
        for _ in 0..per_input {
            let mut m = input.clone();
            for _ in 0..=rng.below(4) {
                let n = m.len();
                if n <= protect {
                    m.push(rng.next() as u8);
                    continue;
                }
                let at = protect + rng.below(n - protect);
                match rng.below(6) {
                    0 => m[at] ^= 1 << rng.below(8),
                    1 => m[at] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)],
                    2 => {
                        let w = [0u64, 1, 4096, u64::MAX, u64::MAX - 4095, 1 << 50][rng.below(6)];
                        let end = (at + 8).min(n);
                        m[at..end].copy_from_slice(&w.to_le_bytes()[..end - at]);
                    }
                    3 => m.truncate(at),
                    4 => m.insert(at, rng.next() as u8),
                    _ => {
                        m.remove(at);
                    }
                }
            }
            f(&m);
        }
    }
}

fn info(i: u8) -> FileInfo {
    FileInfo {
        sealed_path: format!("/srv/bulwark/repo/store/job-{i}/00/11.bwrp").into(),
        job: format!("job-{i}"),
        chain: PointId([1; 16]),
        point: PointId([2; 16]),
        root_digest: Digest([3; 32]),
        size: 4096 * 5,
        inode: 77,
        sealed_unix: 1_790_000_000,
        expiry_unix: 1_791_209_600,
        requested_expiry_unix: 0,
        state: [FileState::Locked, FileState::Unlocked, FileState::Deleted][i as usize % 3],
    }
}

fn messages() -> Vec<(String, Vec<u8>)> {
    let repo = PathBuf::from("/srv/bulwark/repo");
    let reqs = [
        Request::Seal {
            path: repo.join("incoming/0123456789abcdef0123456789abcdef.bwrp"),
        },
        Request::Extend {
            target: Target::Point(PointId([9; 16])),
            until_unix: 1_800_000_000,
        },
        Request::Query {
            target: Target::Path(repo.join("store/j/00/11.bwrp")),
        },
        Request::Delete {
            target: Target::Point(PointId([4; 16])),
        },
        Request::Status,
        Request::TimeAccept,
        Request::TimePreview,
        Request::List {
            repo: repo.clone(),
            cursor: 3,
        },
        Request::Prepare {
            action: "release".into(),
            targets: vec![repo.join("store/j/00/11.bwrp").display().to_string()],
            valid_secs: 86_400,
        },
        Request::Apply {
            statement: approval_statements()[0].1.clone(),
            signatures: vec![
                b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n".to_vec(),
            ],
        },
        Request::AckAlerts,
    ];
    let resps = [
        Response::Sealed(info(0)),
        Response::Entry(info(1)),
        Response::Extended {
            info: info(2),
            capped: true,
        },
        Response::Deleted {
            path: repo.join("store/j/00/11.bwrp"),
        },
        Response::Status(StatusInfo {
            trusted_unix: 1_790_000_000,
            wall_unix: 1_790_000_005,
            unlocks_frozen: true,
            alert: "clock frozen".into(),
            files_locked: 3,
            bytes_locked: 1 << 30,
            files_unlocked: 1,
            next_expiry_unix: 1_791_000_000,
            repositories: 1,
            audit_problem: String::new(),
            connections_open: 2,
            refused_strangers: 5,
            refused_busy: 1,
            requests_timed_out: 0,
            protection_alerts: vec!["/srv/bulwark/repo/store/j/00/11.bwrp is MISSING".into()],
        }),
        Response::TimeAccepted {
            trusted_unix: 1_790_000_000,
        },
        Response::TimePreview(TimePreview {
            trusted_unix: 1_790_000_000,
            wall_unix: 1_800_000_000,
            accepted_unix: 1_800_000_000,
            files_unlocking: 2,
            bytes_unlocking: 8192,
            earliest_expiry_unix: 1_790_100_000,
            alert: String::new(),
        }),
        Response::Entries {
            entries: vec![info(0), info(1)],
            next_cursor: 0,
        },
        Response::Error {
            code: ErrorCode::NotPermitted,
            message: "not permitted".into(),
        },
        Response::Statement {
            text: approval_statements()[0].1.clone(),
        },
        Response::Applied {
            summary: "released with the approval of alice, bob".into(),
        },
    ];
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for r in &reqs {
        out.push((format!("request-{}", r.name()), r.encode()));
    }
    for (i, r) in resps.iter().enumerate() {
        out.push((format!("response-{i}"), r.encode()));
    }
    // Two requests as framed on the socket.
    let mut stream = Vec::new();
    for r in &reqs[..2] {
        bulwark_immut_msg::write_frame(&mut stream, &r.encode()).unwrap();
    }
    out.push(("stream-two-requests".into(), stream));
    out
}

fn meta_for(h: &Header, kind: PointKind, parent: PointId, files: Vec<FileRef>) -> PointMeta {
    PointMeta {
        kind,
        retention: RetentionClass::Weekly,
        compression_level: 3,
        created_unix_secs: 1_790_000_000,
        created_nanos: 5,
        block_size: h.block_size,
        disk_size: h.disk_size,
        point: h.point_id,
        parent,
        chain: PointId([1; 16]),
        job: "job-1".into(),
        client: "client-a".into(),
        stats: Stats::default(),
        files,
        extensions: vec![],
    }
}

fn store(w: &mut PointWriter, no: u64, data: &[u8]) {
    let c = zstd::bulk::compress(data, 3).unwrap();
    let (stored, comp) = if c.len() < data.len() {
        (c, true)
    } else {
        (data.to_vec(), false)
    };
    let (plain, sh) = (Digest::of(data), Digest::of(&stored));
    w.put_stored(StoredBlock {
        block: BlockNo(no),
        plain_len: data.len() as u32,
        plain_hash: plain,
        data: &stored,
        codec: if comp { Codec::Zstd } else { Codec::Raw },
        stored_hash: sh,
    })
    .unwrap();
}

fn rw(p: &Path) -> File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(p)
        .unwrap()
}

/// Small restore points as the writer makes them: an empty full, a full with a compressed
/// block, a raw full-size block and a raw short last block, and an incremental with one own block and one reference.
fn points() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let mut finish = |name: &str, w: PointWriter, meta: PointMeta| {
        let (mut f, _, _) = w.finish(meta).unwrap();
        let mut b = Vec::new();
        use std::io::Seek;
        f.rewind().unwrap();
        f.read_to_end(&mut b).unwrap();
        out.push((name.to_string(), b));
    };
    let header = |disk_size: u64, id: u8| Header {
        block_size: 4096,
        disk_size,
        point_id: PointId([id; 16]),
    };
    let h = header(1 << 20, 1);
    let w = PointWriter::new(rw(&dir.path().join("a")), h).unwrap();
    finish(
        "empty-full",
        w,
        meta_for(&h, PointKind::ActiveFull, PointId::NONE, vec![]),
    );
    let h = header(3 * 4096 + 100, 1);
    let mut w = PointWriter::new(rw(&dir.path().join("b")), h).unwrap();
    store(&mut w, 0, &[7u8; 4096]);
    // A full-size raw block: 4096 incompressible bytes.
    let raw: Vec<u8> = (0..4096u32).map(|i| (i * 131 % 251) as u8).collect();
    store(&mut w, 1, &raw);
    let noise: Vec<u8> = (0..100u32).map(|i| (i * 97 % 251) as u8).collect();
    store(&mut w, 3, &noise);
    finish(
        "full-two-blocks",
        w,
        meta_for(&h, PointKind::ActiveFull, PointId::NONE, vec![]),
    );
    let h = header(3 * 4096 + 100, 2);
    let mut w = PointWriter::new(rw(&dir.path().join("c")), h).unwrap();
    let r = w.add_file(FileRef {
        point: PointId([1; 16]),
        root: Digest([5; 32]),
    });
    store(&mut w, 1, &[8u8; 4096]);
    w.put_ref(MapEntry {
        block: BlockNo(3),
        file_ref: r,
        flags: 0,
        offset: 8192,
        stored_len: 100,
        plain_len: 100,
        plain_hash: Digest::of(&noise),
        stored_hash: Digest::of(&noise),
    })
    .unwrap();
    finish(
        "incremental-ref",
        w,
        meta_for(&h, PointKind::Incremental, PointId([1; 16]), vec![]),
    );
    out
}

fn point_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, file) in points() {
        let fixed = compact_point(&file, FIX_HEADER_CHECK | FIX_TRAILER);
        // The harness's fix-ups compute exactly what the writer wrote.
        assert_eq!(
            point_file(&fixed),
            file,
            "{name}: fix-ups differ from the writer"
        );
        assert_eq!(point_file(&compact_point(&file, 0)), file);
        seeds.push((format!("{name}-fixed"), fixed));
    }
    seeds.push((
        "dirty-header-padding".into(),
        compact_point(
            &points()[0].1,
            FIX_HEADER_CHECK | FIX_TRAILER | DIRTY_HEADER_PADDING,
        ),
    ));
    seeds
}

#[test]
fn decode_msg_seeds_and_mutations_pass() {
    let seeds = committed("decode_msg");
    assert!(!seeds.is_empty());
    replay(&seeds, 5000, decode_msg, 0);
}

#[test]
fn immut_msg_seeds_and_mutations_pass() {
    let made = messages();
    sync_seeds("immut_msg", &made);
    for (name, b) in &made {
        if name.starts_with("request-") {
            assert!(Request::decode(b).is_ok(), "{name}");
        } else if name.starts_with("response-") {
            assert!(Response::decode(b).is_ok(), "{name}");
        }
    }
    replay(&committed("immut_msg"), 10000, immut_msg, 0);
}

/// One statement of each action, as the immutability service issues them.
fn approval_statements() -> Vec<(String, Vec<u8>)> {
    use bulwark_approval::{Action, FileRef, RepoFiles, Statement};
    let base = |action| Statement {
        host: "backup-1".into(),
        machine_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        nonce: "8c1d0f4e5a6b7c8d9e0f1a2b3c4d5e6f".into(),
        issued: 1_800_000_000,
        expires: 1_800_086_400,
        action,
    };
    let release = Action::Release {
        repos: vec![RepoFiles {
            path: "/srv/bulwark/repo".into(),
            id: "5f3c0a9e".into(),
            files: vec![FileRef {
                path: "/srv/bulwark/repo/store/vm-1/00/11.bwrp".into(),
                root: "ab".repeat(32),
                size: 12288,
                until: 1_800_604_800,
            }],
        }],
    };
    let time = Action::TimeAccept {
        trusted: 1_800_000_000,
        wall: 1_800_691_200,
        offset: 691_200,
        files_unlocking: 2,
        bytes_unlocking: 8192,
        earliest_expiry: 1_800_100_000,
    };
    let config = Action::Config {
        approved: "01".repeat(32),
        proposed: "02".repeat(32),
        changes: vec!["repository /srv/bulwark/repo: min_period_days lowered from 30 to 14".into()],
    };
    [
        ("release", release),
        ("time-accept", time),
        ("config", config),
    ]
    .into_iter()
    .map(|(n, a)| (format!("statement-{n}"), base(a).encode().into_bytes()))
    .collect()
}

#[test]
fn approval_statement_seeds_and_mutations_pass() {
    let made = approval_statements();
    sync_seeds("approval_statement", &made);
    for (name, b) in &made {
        assert!(bulwark_approval::Statement::decode(b).is_ok(), "{name}");
    }
    replay(
        &committed("approval_statement"),
        10000,
        approval_statement,
        0,
    );
}

#[test]
fn point_reader_seeds_open_and_mutations_pass() {
    let made = point_seeds();
    sync_seeds("point_reader", &made);
    for (name, b) in &made {
        let file = point_file(b);
        let f = tempfile::tempfile().unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &file, 0).unwrap();
        let opened = PointReader::open(f);
        assert_eq!(opened.is_ok(), !name.starts_with("dirty"), "{name}");
        if let Ok(r) = opened {
            r.check_padding().unwrap();
        }
    }
    // The mode byte stays as seeded (index 0 protected): mutations land behind the fix-ups.
    replay(&committed("point_reader"), 5000, point_reader, 1);
}

/// Encrypted-block inputs: sealed by the harness (text that compresses, raw bytes, a zstd
/// frame whose keyed hash matches) and unsealed; plus an encryption record.
fn encrypted_seeds() -> Vec<(String, Vec<u8>)> {
    let head = |mode: u8, block: u64, plain_len: u32, zstd: bool, keyed: [u8; 32]| {
        let mut b = vec![mode];
        b.extend_from_slice(&block.to_le_bytes());
        b.extend_from_slice(&(plain_len - 1).to_le_bytes());
        b.push(u8::from(zstd));
        b.extend_from_slice(&keyed);
        b
    };
    let text = b"encrypted block seed ".repeat(50);
    let keyed = *blake3::keyed_hash(&[9; 32], &text).as_bytes();
    let frame = zstd::bulk::compress(&text, 3).unwrap();
    let mut raw = head(SEAL_PAYLOAD, 3, text.len() as u32, false, keyed);
    raw.extend_from_slice(&text);
    let mut comp = head(SEAL_PAYLOAD, 4, text.len() as u32, true, keyed);
    comp.extend_from_slice(&frame);
    let mut unsealed = head(0, 5, 100, false, [1; 32]);
    unsealed.extend_from_slice(&[0xab; 140]);
    let record = bulwark_format::EncryptionRecord {
        mode: bulwark_format::KeyMode::WriteOnly,
        key_id: [3; 16],
        sessions: vec![bulwark_format::Session {
            salt: [4; 16],
            wrapped: vec![5; 80],
        }],
        positional: false,
    };
    vec![
        ("sealed-raw".into(), raw),
        ("sealed-zstd".into(), comp),
        ("unsealed".into(), unsealed),
        ("record".into(), record.encode()),
    ]
}

#[test]
fn encrypted_block_seeds_and_mutations_pass() {
    let made = encrypted_seeds();
    sync_seeds("encrypted_block", &made);
    for (_, b) in &made {
        encrypted_block(b);
    }
    // The mode byte stays as seeded: mutations land in the entry and the payload.
    replay(&committed("encrypted_block"), 3000, encrypted_block, 1);
}
