//! `bulwark verify` and `bulwark-repo verify` compare the immutability service's ledger with
//! the store (issue 12, item 3): a file the ledger lists as sealed that is missing, replaced or
//! no longer immutable is named, exit 1, also when the S3 tier holds a copy. And padding
//! must be zero (item 4): a flipped padding byte fails the seal and fails verify. Root only,
//! with a real service user and the real bulwark-immutd.

use std::fs::File;
use std::path::{Path, PathBuf};

use bulwark_format::{BlockNo, Codec, Header, PointReader, PointWriter, StoredBlock};
use bulwark_testkit::cmd::text;
use bulwark_testkit::guarded::*;
use bulwark_testkit::skip::require_s3;
use bulwark_testkit::system::{full_meta, point_of, poke, poke_sealed, sealed_files, user_dir};

/// Runs `bulwark verify` and `bulwark-repo verify` as the user; both must exit `code`.
/// Returns what each printed.
fn verify_both(sys: &System, code: i32) -> (String, String) {
    let a = sys
        .user()
        .run(&sys.bulwark, &["verify", "--repo", &sys.repo]);
    let b = sys.repo_cmd(&["verify", &sys.repo]);
    assert_eq!(a.status.code(), Some(code), "bulwark verify: {}", text(&a));
    assert_eq!(
        b.status.code(),
        Some(code),
        "bulwark-repo verify: {}",
        text(&b)
    );
    (text(&a), text(&b))
}

fn backup(sys: &System, job: &str, img: &Path) {
    let o = sys.backup(false, job, img);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("sealed immutable until"));
}

/// A disk image owned by the user; `salt` changes its content.
fn image(sys: &System, salt: &str) -> PathBuf {
    let mut data = b"disk content ".repeat(100_000);
    data.extend_from_slice(salt.as_bytes());
    sys.image("d.img", &data)
}

#[test]
fn verify_names_a_sealed_point_that_is_missing_from_the_store() {
    let name = "verify_names_a_sealed_point_that_is_missing_from_the_store";
    let Some(sys) = System::guarded(name, &["mkfs.ext4", "useradd", "chattr"], FsKind::Ext4) else {
        return;
    };
    let (rig, u, repo) = (&sys.rig, sys.user(), &sys.repo);
    let bulwark = &sys.bulwark;
    let svc = rig.start();
    backup(&sys, "a", &image(&sys, "1"));
    backup(&sys, "a", &image(&sys, "2"));
    backup(&sys, "b", &image(&sys, "3"));
    verify_both(&sys, 0);
    let a = sealed_files(&rig.repo, "a");
    let b = sealed_files(&rig.repo, "b");
    assert_eq!((a.len(), b.len()), (2, 1));

    // Root removes the newest point of a, which nothing references.
    sh(&format!("chattr -i {0} && rm {0}", a[1].display()));
    let (x, y) = verify_both(&sys, 1);
    for out in [&x, &y] {
        assert!(
            out.contains(&point_of(&a[1])) && out.contains("missing from the store"),
            "{out}"
        );
        assert_eq!(out.matches("DAMAGED").count(), 1, "{out}");
    }
    // A repeated verify still names it (the ledger, not a health file, is the reference).
    let (x, _) = verify_both(&sys, 1);
    assert!(x.contains("missing from the store"), "{x}");

    // Root clears the immutable attribute of b's file: not sealed any more.
    sh(&format!("chattr -i {}", b[0].display()));
    let (x, y) = verify_both(&sys, 1);
    for out in [&x, &y] {
        assert!(
            out.contains(&point_of(&b[0]))
                && out.contains("not sealed: the immutable attribute is cleared"),
            "{out}"
        );
    }
    sh(&format!("chattr +i {}", b[0].display()));

    // Root replaces a's full with an identical copy: same bytes and root digest, another inode.
    sh(&format!(
        "chattr -i {0} && cp -p {0} {0}.new && mv {0}.new {0} && chattr +i {0}",
        a[0].display()
    ));
    let (x, y) = verify_both(&sys, 1);
    for out in [&x, &y] {
        assert!(
            out.contains(&point_of(&a[0])) && out.contains("the file was replaced"),
            "{out}"
        );
    }

    // Root removes job b altogether: verify of all jobs still names its point.
    sh(&format!(
        "chattr -R -i {0} && rm -rf {0}",
        rig.repo.join("store/b").display()
    ));
    let (x, y) = verify_both(&sys, 1);
    for out in [&x, &y] {
        assert!(
            out.contains(&point_of(&b[0])) && out.contains("missing from the store"),
            "{out}"
        );
    }
    let o = run_as(u, bulwark, &["verify", "--repo", repo, "--job", "b"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    svc.stop();
}

#[test]
fn verify_names_points_missing_locally_although_the_s3_tier_holds_them() {
    let name = "verify_names_points_missing_locally_although_the_s3_tier_holds_them";
    if !can_run(name, &["mkfs.ext4", "useradd", "chattr", "cmp"]) {
        return;
    }
    let Some(s3) = require_s3(name) else {
        return;
    };
    let Some(tier_bin) = tier_bin(name) else {
        return;
    };
    let Some(sys) = System::guarded(name, &[], FsKind::Ext4) else {
        return;
    };
    let (rig, u, repo) = (&sys.rig, sys.user(), &sys.repo);
    let (bulwark, repo_bin) = (&sys.bulwark, &sys.repo_bin);
    let svc = rig.start();
    backup(&sys, "vm", &image(&sys, "1"));
    let img = image(&sys, "2");
    backup(&sys, "vm", &img);
    let creds = rig.fs.mnt.join("s3.credentials");
    s3.write_credentials(&creds);
    u.chown(&creds);
    let bucket = format!("verify-missing-{}", std::process::id());
    let o = run_as(u, &tier_bin, &s3.add_args(repo, &bucket, &creds));
    assert!(o.status.success(), "{}", text(&o));
    let o = run_as(u, &tier_bin, &["sync", repo]);
    assert!(o.status.success(), "{}", text(&o));
    verify_both(&sys, 0);

    // Every local file is gone; the tier still holds both copies.
    let files = sealed_files(&rig.repo, "vm");
    assert_eq!(files.len(), 2);
    for f in &files {
        sh(&format!("chattr -i {0} && rm {0}", f.display()));
    }
    let o = run_as(u, bulwark, &["verify", "--repo", repo]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    for f in &files {
        assert!(out.contains(&point_of(f)), "{out}");
    }
    assert_eq!(out.matches("missing from the store").count(), 2, "{out}");
    assert!(out.contains("the copy in the tier still restores"), "{out}");
    // Without the tier attached (bulwark-repo verify) the ledger alone names them.
    let o = run_as(u, repo_bin, &["verify", repo]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        text(&o).matches("missing from the store").count(),
        2,
        "{}",
        text(&o)
    );
    // Restores from the tier keep working.
    let out_dir = user_dir(u, rig.fs.mnt.join("out"));
    let out_img = out_dir.join("restored.img");
    let o = run_as(
        u,
        bulwark,
        &[
            "restore",
            "--repo",
            repo,
            "--job",
            "vm",
            out_img.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    sh(&format!("cmp {} {}", img.display(), out_img.display()));
    svc.stop();
}

/// A zstd frame of one RLE block: `n` copies of `byte` (11 bytes, a real frame).
fn rle_frame(byte: u8, n: u32) -> Vec<u8> {
    assert!((256..=65_791).contains(&n));
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD];
    // Single segment, a 2-byte content size (stored minus 256), no checksum, no dictionary.
    f.push(0x60);
    f.extend_from_slice(&((n - 256) as u16).to_le_bytes());
    // Last block, type RLE, size n.
    let bh = 1 | (1 << 1) | (n << 3);
    f.extend_from_slice(&bh.to_le_bytes()[..3]);
    f.push(byte);
    f
}

/// Writes a finished point into `incoming/` as the user would: block 0 compressed (so
/// padding follows it), block 1 raw. Returns its path and block 0's stored end offset.
fn padded_incoming(rig: &Rig, job: &str) -> (PathBuf, u64) {
    let point = new_point();
    let tmp = rig.repo.join("incoming").join(format!(".tmp-{point}"));
    let h = Header {
        block_size: 4096,
        disk_size: 2 * 4096,
        point_id: point,
    };
    let mut w = PointWriter::new(File::create(&tmp).unwrap(), h).unwrap();
    let plain = vec![0x5Au8; 4096];
    let frame = rle_frame(0x5A, 4096);
    let e = w
        .put_stored(StoredBlock::encoded(
            BlockNo(0),
            &plain,
            &frame,
            Codec::Zstd,
        ))
        .unwrap();
    let raw: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    w.put_stored(StoredBlock::raw(BlockNo(1), &raw)).unwrap();
    let mut meta = full_meta(point, job, 1_800_000_000, 4096, 2 * 4096);
    meta.compression_level = 1;
    w.finish(meta).unwrap();
    rig.user.chown(&tmp);
    let dst = rig.incoming_path(point);
    std::fs::rename(&tmp, &dst).unwrap();
    (dst, e.offset + u64::from(e.stored_len))
}

#[test]
fn a_flipped_padding_byte_fails_seal_and_verify() {
    let name = "a_flipped_padding_byte_fails_seal_and_verify";
    let Some(sys) = System::guarded(name, &["mkfs.ext4", "useradd", "chattr"], FsKind::Ext4) else {
        return;
    };
    let (rig, u) = (&sys.rig, sys.user());
    let svc = rig.start();
    let sock = rig.socket();

    // Seal: a byte flipped in the header's padding, or after a compressed block, is refused,
    // the file stays in incoming/, and the same file with zero padding seals.
    let (p, block_end) = padded_incoming(rig, "pad");
    for (offset, region) in [
        (1000, "header's padding"),
        (block_end, "padding after block 0"),
        (block_end + 7, "padding after block 0"),
        (8191, "padding after block 0"),
    ] {
        poke(&p, offset, 0x01);
        let r = u.ctl(&sock, &["seal", p.to_str().unwrap()]);
        assert!(r.refused().is_some(), "flip at {offset} sealed: {r:?}");
        let msg = r.get("message").unwrap_or_default();
        assert!(
            msg.contains(&format!("byte {offset} ")) && msg.contains(region),
            "{msg}"
        );
        assert!(p.exists(), "the refused file must stay in incoming/");
        poke(&p, offset, 0);
    }
    let r = u.ctl(&sock, &["seal", p.to_str().unwrap()]).ok();
    let sealed = PathBuf::from(r.get("sealed_path").unwrap());
    assert!(is_immutable(&sealed));

    // Verify: a real backup, then root flips padding bytes of its sealed file.
    backup(&sys, "vm", &image(&sys, "1"));
    verify_both(&sys, 0);
    let f = sealed_files(&rig.repo, "vm").pop().unwrap();
    let r = PointReader::open(File::open(&f).unwrap()).unwrap();
    let e = *r
        .map
        .iter()
        .find(|e| e.file_ref == 0 && e.stored_len % 4096 != 0)
        .expect("a block followed by padding");
    drop(r);
    let after_block = e.offset + u64::from(e.stored_len);
    for (offset, region) in [
        (1000, "header's padding".to_string()),
        (after_block, format!("padding after block {}", e.block)),
        (
            bulwark_format::align_up(after_block) - 1,
            format!("padding after block {}", e.block),
        ),
    ] {
        let old = poke_sealed(&f, offset, 0x80);
        let (x, y) = verify_both(&sys, 1);
        for out in [&x, &y] {
            assert!(
                out.contains(&point_of(&f))
                    && out.contains(&format!("byte {offset} "))
                    && out.contains(&region),
                "{out}"
            );
        }
        poke_sealed(&f, offset, old);
    }
    verify_both(&sys, 0);
    svc.stop();
}
