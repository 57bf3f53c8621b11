//! `bulwark verify` on a guarded repository compares every restore point with the
//! immutability service's ledger: a sealed file that root replaced behind the service's
//! back, or a file put into the store without being sealed, is reported. Root only.

use std::fs::File;
use std::path::Path;

use bulwark_format::{BlockNo, Header, PointReader, PointWriter, StoredBlock};
use bulwark_testkit::guarded::*;

/// Rewrites `path` as a valid restore point with the same ids but other content.
fn forge(path: &Path) {
    let r = PointReader::open(File::open(path).unwrap()).unwrap();
    let mut meta = r.meta.clone();
    meta.files.clear();
    let header = r.header;
    drop(r);
    let tmp = path.with_extension("forged");
    let mut w = PointWriter::new(File::create(&tmp).unwrap(), header).unwrap();
    let data = vec![0x5Au8; header.block_size.min(header.disk_size as u32) as usize];
    w.put_stored(StoredBlock::raw(BlockNo(0), &data)).unwrap();
    w.finish(meta).unwrap();
    sh(&format!(
        "chattr -i {p} && cat {t} > {p} && rm {t} && chattr +i {p}",
        p = path.display(),
        t = tmp.display()
    ));
}

#[test]
fn verify_reports_files_replaced_or_planted_behind_the_services_back() {
    let name = "verify_reports_files_replaced_or_planted_behind_the_services_back";
    let Some(sys) = System::guarded(name, &["mkfs.ext4", "useradd", "chattr"], FsKind::Ext4) else {
        return;
    };
    let (rig, u, repo, bulwark) = (&sys.rig, sys.user(), &sys.repo, &sys.bulwark);
    let svc = rig.start();
    let img = sys.image("d.img", &b"disk content ".repeat(100_000));
    for job in ["a", "b"] {
        let o = sys.backup(false, job, &img);
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).contains("sealed immutable until"));
    }
    assert_eq!(
        run_as(u, bulwark, &["verify", "--repo", repo])
            .status
            .code(),
        Some(0)
    );

    // Root replaces job a's sealed file with a forged one carrying the same ids.
    let list: serde_json::Value =
        serde_json::from_slice(&run_as(u, bulwark, &["--json", "list", "--repo", repo]).stdout)
            .unwrap();
    let path_of = |i: usize| {
        let p = &list["jobs"][i]["points"][0];
        rig.repo
            .join("store")
            .join(list["jobs"][i]["job"].as_str().unwrap())
            .join(p["chain"].as_str().unwrap())
            .join(format!("{}.bwrp", p["point"].as_str().unwrap()))
    };
    let a = path_of(0);
    forge(&a);
    let o = run_as(u, bulwark, &["verify", "--repo", repo]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("differs from the ledger") && out.contains("replaced"),
        "{out}"
    );

    // Root plants a self-consistent restore point of a new job that was never sealed.
    let r = PointReader::open(File::open(path_of(1)).unwrap()).unwrap();
    let id = bulwark_format::PointId::new(1_800_000_000_000_000_000, [7; 8]);
    let header = Header {
        point_id: id,
        ..r.header
    };
    let mut meta = r.meta.clone();
    (meta.point, meta.chain, meta.job, meta.files) = (id, id, "c".into(), vec![]);
    drop(r);
    let planted = rig
        .repo
        .join("store/c")
        .join(id.to_hex())
        .join(format!("{}.bwrp", id.to_hex()));
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    let mut w = PointWriter::new(File::create(&planted).unwrap(), header).unwrap();
    let data = vec![1u8; header.block_size as usize];
    w.put_stored(StoredBlock::raw(BlockNo(0), &data)).unwrap();
    w.finish(meta).unwrap();
    let o = run_as(u, bulwark, &["verify", "--repo", repo, "--job", "c"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("not in the immutability service's ledger"),
        "{out}"
    );
    svc.stop();
}
