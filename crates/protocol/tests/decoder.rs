//! The decoder over valid, random and mutated frames: it must return a message or an error,
//! never panic, and never accept a length beyond its type's limit.

use bulwark_format::{BlockNo, Codec, Digest, PointId, PointKind, RetentionClass, StoredBlock};
use bulwark_protocol::*;
use proptest::prelude::*;

fn summary(n: u8) -> PointSummary {
    PointSummary {
        point: PointId([n; 16]),
        chain: PointId([n + 1; 16]),
        parent: PointId::NONE,
        kind: PointKind::Incremental,
        retention: RetentionClass::Weekly,
        created_unix: 1_700_000_000 + i64::from(n),
        created_nanos: 5,
        disk_size: 1 << 30,
        block_size: 1 << 20,
        file_bytes: 77,
        stored_bytes: 66,
        new_bytes: 55,
        new_blocks: 4,
        root: Digest([n; 32]),
        client: "client-a".into(),
    }
}

/// One valid message of every type.
fn samples() -> Vec<Msg<'static>> {
    vec![
        Msg::Hello {
            version: 1,
            software: "bulwark 0.1".into(),
        },
        Msg::Welcome {
            version: 1,
            client: "c".into(),
            server_unix: 12,
            repository: "r".into(),
        },
        Msg::Error {
            code: ErrorCode::Busy,
            message: "busy".into(),
        },
        Msg::Enroll {
            token: "tok".into(),
            csr_der: vec![1, 2, 3],
        },
        Msg::Enrolled {
            client: "c".into(),
            cert_der: vec![4; 40],
            ca_der: vec![5; 30],
        },
        Msg::ListJobs,
        Msg::Jobs {
            jobs: vec!["a".into(), "b-c".into()],
        },
        Msg::ListPoints { job: "vm1".into() },
        Msg::Points {
            last: true,
            points: vec![summary(1), summary(2)],
        },
        Msg::BeginBackup(BackupRequest {
            job: "vm1".into(),
            disk_size: 1 << 33,
            block_size: 0,
            compression_level: -3,
            force_full: true,
        }),
        Msg::BackupReady(BackupReady {
            point: PointId([9; 16]),
            chain: PointId([8; 16]),
            parent: PointId([7; 16]),
            kind: PointKind::Incremental,
            block_size: 1 << 20,
            known: 3,
            full_reason: String::new(),
        }),
        Msg::Known {
            entries: vec![(1, Digest([1; 32])), (9, Digest([2; 32]))],
        },
        Msg::Block(StoredBlock {
            block: BlockNo(3),
            plain_len: 8,
            plain_hash: Digest([3; 32]),
            data: b"abc",
            codec: Codec::Zstd,
            stored_hash: Digest([4; 32]),
        }),
        Msg::Unchanged {
            first: 4,
            count: 10,
        },
        Msg::Finish { blocks: 11 },
        Msg::Sealed(SealedInfo {
            summary: summary(3),
            immutable: true,
            expiry: Some(99),
            notice: String::new(),
        }),
        Msg::Sealed(SealedInfo {
            summary: summary(3),
            immutable: true,
            expiry: Some(99),
            notice: "unlocks are frozen".into(),
        }),
        Msg::BeginRestore {
            job: "vm1".into(),
            point: Some(PointId([1; 16])),
        },
        Msg::BeginRestore {
            job: "vm1".into(),
            point: None,
        },
        Msg::RestoreReady {
            point: summary(4),
            blocks: 5,
        },
        Msg::RestoreEnd { blocks: 5 },
        Msg::Verify { job: None },
        Msg::Verify {
            job: Some("vm1".into()),
        },
        Msg::VerifyReport(VerifyReport {
            points_checked: 3,
            blocks_checked: 4,
            bytes_checked: 5,
            damaged: vec![DamagedPoint {
                job: "vm1".into(),
                point: Some(PointId([2; 16])),
                problems: vec!["bad".into()],
                blocks: vec![1, 2],
                more_blocks: 0,
            }],
        }),
        Msg::OpenExport {
            job: "vm1".into(),
            point: None,
        },
        Msg::ExportReady {
            point: summary(5),
            entries: 2,
        },
        Msg::ExportMap {
            entries: vec![(0, Digest([6; 32])), (7, Digest([7; 32]))],
        },
        Msg::ReadBlocks {
            first: 3,
            count: 64,
        },
        Msg::BlockUnavailable {
            block: 3,
            message: "I/O error".into(),
        },
        Msg::GetParentEncryption,
        Msg::GetParentCbt,
        Msg::ParentCbt { record: vec![] },
        Msg::ParentCbt {
            record: vec![1, 1, 0, 0, 7],
        },
        Msg::Cbt {
            record: vec![2; 80],
        },
        Msg::EncryptionRecord { record: vec![] },
        Msg::EncryptionRecord {
            record: vec![1, 1, 2, 0, 9, 9],
        },
        Msg::Encryption {
            record: vec![5; 120],
        },
        Msg::Block(StoredBlock {
            block: BlockNo(4),
            plain_len: 100,
            plain_hash: Digest([3; 32]),
            data: &[0xe5; 132],
            codec: Codec::SealedRaw,
            stored_hash: Digest([4; 32]),
        }),
        Msg::Locks(LockMsg::List { job: "vm1".into() }),
        Msg::Locks(LockMsg::Page(LockPage {
            last: true,
            guarded: true,
            clock: Some(LockClock {
                trusted_unix: 1,
                wall_unix: 2,
                unlocks_frozen: true,
                alert: "wall clock jumped".into(),
            }),
            entries: vec![LockEntry {
                point: PointId([1; 16]),
                chain: PointId([2; 16]),
                sealed_unix: 3,
                expiry_unix: 4,
                size: 5,
                state: 1,
            }],
        })),
        Msg::Locks(LockMsg::Page(LockPage {
            last: false,
            guarded: false,
            clock: None,
            entries: vec![],
        })),
    ]
    .into_iter()
    .chain(copy_samples())
    .collect()
}

/// One valid copy message of every copy type (0x60–0x6F).
fn copy_samples() -> Vec<Msg<'static>> {
    let entry = bulwark_format::MapEntry {
        block: BlockNo(7),
        file_ref: 1,
        flags: 1,
        offset: 8192,
        stored_len: 100,
        plain_len: 4096,
        plain_hash: Digest([1; 32]),
        stored_hash: Digest([2; 32]),
    };
    vec![
        Msg::Copy(CopyMsg::Held { job: "vm1".into() }),
        Msg::Copy(CopyMsg::HeldList {
            last: true,
            points: vec![
                HeldEntry {
                    point: PointId([3; 16]),
                    chain: PointId([3; 16]),
                    root: Digest([4; 32]),
                    created: 1_700_000_000,
                    origin: None,
                },
                HeldEntry {
                    point: PointId([5; 16]),
                    chain: PointId([5; 16]),
                    root: Digest([6; 32]),
                    created: 1_700_000_001,
                    origin: Some((PointId([7; 16]), PointId([8; 16]), Digest([9; 32]))),
                },
            ],
        }),
        Msg::Copy(CopyMsg::Begin(CopyBegin {
            job: "vm1".into(),
            header: vec![1; COPY_HEADER_LEN],
            trailer: vec![2; COPY_TRAILER_LEN],
            meta: vec![3; 200],
        })),
        Msg::Copy(CopyMsg::Map {
            entries: vec![entry, entry],
        }),
        Msg::Copy(CopyMsg::Plan(CopyPlanMsg {
            mode: 1,
            needed: 2,
            resumed_bytes: 3,
            local_bytes: 4,
        })),
        Msg::Copy(CopyMsg::Need {
            blocks: vec![1, 5, 9],
        }),
        Msg::Copy(CopyMsg::Read {
            job: "vm1".into(),
            point: PointId([3; 16]),
            count: 3,
        }),
        Msg::Copy(CopyMsg::ReadHead {
            job: "vm1".into(),
            point: PointId([3; 16]),
        }),
    ]
}

fn frame(m: &Msg<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    write_msg(&mut v, m).unwrap();
    v
}

/// Reads every frame of `bytes` until an error; must never panic.
fn decode_all(bytes: &[u8]) -> usize {
    let mut r = bytes;
    let mut fb = FrameBuf::default();
    let mut n = 0;
    while read_frame(&mut r, &mut fb, |_| {}).is_ok() {
        if let Ok(m) = fb.msg() {
            // Whatever decodes re-encodes to the same message (as the fuzz target checks).
            let again = frame(&m);
            let mut fb2 = FrameBuf::default();
            read_frame(&mut &again[..], &mut fb2, |_| {}).unwrap();
            assert_eq!(fb2.msg().unwrap(), m);
        }
        n += 1;
    }
    n
}

#[test]
fn every_message_type_round_trips() {
    let all = samples();
    for t in MsgType::ALL {
        assert!(all.iter().any(|m| m.ty() == *t), "no sample of {t:?}");
    }
    for m in &all {
        let bytes = frame(m);
        let mut fb = FrameBuf::default();
        read_frame(&mut &bytes[..], &mut fb, |_| {}).unwrap();
        assert_eq!(fb.msg().unwrap(), *m);
    }
}

#[test]
fn a_4_gib_length_prefix_is_refused_before_reading() {
    for t in MsgType::ALL {
        let mut h = u32::MAX.to_le_bytes().to_vec();
        h.push(t.code());
        let mut fb = FrameBuf::default();
        let e = read_frame(&mut &h[..], &mut fb, |_| {}).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e}");
    }
    let mut fb = FrameBuf::default();
    let e = read_frame(&mut &[0, 0, 0, 0, 0xee][..], &mut fb, |_| {}).unwrap_err();
    assert!(matches!(e, ProtocolError::UnknownType(0xee)));
}

#[test]
fn a_block_frame_is_limited_to_a_4_mib_block_and_its_77_byte_header() {
    // An encrypted block may be 32 bytes longer than its plain block (salt and tag).
    assert_eq!(BLOCK_HEADER_LEN, 77);
    assert_eq!(MAX_NET_BLOCK_SIZE, 4 << 20);
    assert_eq!(MsgType::Block.max_payload(), (4 << 20) + 77 + 32);
    let header = |len: u32| {
        let mut h = [0u8; FRAME_HEADER_LEN];
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4] = MsgType::Block.code();
        h
    };
    assert_eq!(
        check_header(header((4 << 20) + 77 + 32)).unwrap(),
        (MsgType::Block, (4 << 20) + 77 + 32)
    );
    // What the decoder accepted before: a 16 MiB block (the format's largest) and its header.
    for len in [(4 << 20) + 77 + 33, (16 << 20) + 77] {
        let e = check_header(header(len)).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e}");
        let mut fb = FrameBuf::default();
        let e = read_frame(&mut &header(len)[..], &mut fb, |_| {}).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e}");
    }
    // A full 4 MiB block round-trips; one byte more is refused by the writer too.
    let data = vec![7u8; 4 << 20];
    let blk = StoredBlock {
        block: BlockNo(3),
        plain_len: 4 << 20,
        plain_hash: Digest([1; 32]),
        data: &data,
        codec: Codec::Raw,
        stored_hash: Digest([2; 32]),
    };
    let mut out = Vec::new();
    write_msg(&mut out, &Msg::Block(blk)).unwrap();
    let mut fb = FrameBuf::default();
    read_frame(&mut &out[..], &mut fb, |_| {}).unwrap();
    // A plain block longer than its plain length is refused by the decoder.
    let long = vec![7u8; (4 << 20) + 1];
    let mut out = Vec::new();
    write_msg(&mut out, &Msg::Block(StoredBlock { data: &long, ..blk })).unwrap();
    let mut fb = FrameBuf::default();
    read_frame(&mut &out[..], &mut fb, |_| {}).unwrap();
    assert!(fb.msg().is_err());
    // A full 4 MiB block encrypted (32 bytes more) round-trips; one byte more is refused.
    let sealed = vec![7u8; (4 << 20) + 32];
    let enc = StoredBlock {
        data: &sealed,
        codec: Codec::SealedRaw,
        ..blk
    };
    let mut out = Vec::new();
    write_msg(&mut out, &Msg::Block(enc)).unwrap();
    let mut fb = FrameBuf::default();
    read_frame(&mut &out[..], &mut fb, |_| {}).unwrap();
    assert_eq!(fb.msg().unwrap(), Msg::Block(enc));
    let big = vec![7u8; (4 << 20) + 33];
    let e = write_msg(
        &mut Vec::new(),
        &Msg::Block(StoredBlock { data: &big, ..blk }),
    )
    .unwrap_err();
    assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e}");
}

#[test]
fn truncated_frames_and_trailing_bytes_are_errors() {
    for m in samples() {
        let bytes = frame(&m);
        for cut in 0..bytes.len() {
            let mut fb = FrameBuf::default();
            let r = read_frame(&mut &bytes[..cut], &mut fb, |_| {});
            assert!(r.is_err(), "{:?} cut at {cut} accepted", m.ty());
        }
        // One extra byte inside the payload: the decoder must notice.
        let mut long = bytes.clone();
        let len = u32::from_le_bytes(long[..4].try_into().unwrap()) + 1;
        if len <= m.ty().max_payload() && m.ty() != MsgType::Block {
            long[..4].copy_from_slice(&len.to_le_bytes());
            long.push(0);
            let mut fb = FrameBuf::default();
            read_frame(&mut &long[..], &mut fb, |_| {}).unwrap();
            assert!(
                fb.msg().is_err(),
                "{:?} with a trailing byte accepted",
                m.ty()
            );
        }
    }
}

#[test]
fn counts_larger_than_the_frame_are_refused_without_allocating() {
    // A Known frame claiming 16384 entries in 4 bytes of payload.
    let mut p = vec![0u8; 0];
    p.extend_from_slice(&16_384u32.to_le_bytes());
    let e = Msg::decode(MsgType::Known, &p).unwrap_err();
    assert!(matches!(e, ProtocolError::Malformed { .. }), "{e}");
    let e = Msg::decode(MsgType::Jobs, &u32::MAX.to_le_bytes()).unwrap_err();
    assert!(matches!(e, ProtocolError::Malformed { .. }), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        decode_all(&bytes);
        for t in MsgType::ALL {
            let _ = Msg::decode(*t, &bytes);
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..23,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let all = samples();
        let mut bytes = frame(&all[which % all.len()]);
        for (at, v) in flips {
            let i = at % bytes.len();
            bytes[i] ^= v;
        }
        decode_all(&bytes);
    }
}
