//! A `--writable` overlay belongs to the restore point it was made over: reopened over
//! another point (here `latest` after a new backup) it is refused, and left as it was, because
//! its clusters are changes to the first point's disk and would read back mixed into the other.

mod common;

use bulwark_testkit::Rng;
use common::{bulwark_ok as bulwark, rig, s, Export};

#[test]
fn a_writable_overlay_is_refused_over_another_restore_point_and_kept_intact() {
    let t = "a_writable_overlay_is_refused_over_another_restore_point_and_kept_intact";
    let Some((d, repo, img)) = rig(t, &["qemu-io"]) else {
        return;
    };
    std::fs::write(&img, Rng::new(11).bytes(4 << 20)).unwrap();
    let first = bulwark(&[
        "--json",
        "backup",
        "--repo",
        s(&repo),
        "--job",
        "vm",
        s(&img),
    ]);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let first = first["point"].as_str().unwrap().to_string();

    let sock = d.path().join("e.sock");
    let ovf = d.path().join("writes.overlay");
    let map = d.path().join("writes.overlay.map");
    {
        let e = Export::start(&repo, "vm", "latest", &sock, &["--writable", s(&ovf)]);
        let o = std::process::Command::new("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "write -P 7 1M 64k",
                "-c",
                "flush",
                &e.uri(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
        assert!(e.stop().success());
    }
    let (overlay_before, map_before) = (std::fs::read(&ovf).unwrap(), std::fs::read(&map).unwrap());

    // A second backup: `latest` is now another point.
    std::fs::write(&img, Rng::new(13).bytes(4 << 20)).unwrap();
    bulwark(&["backup", "--repo", s(&repo), "--job", "vm", s(&img)]);
    let args = [
        "--repo",
        s(&repo),
        "--job",
        "vm",
        "--point",
        "latest",
        "--writable",
        s(&ovf),
    ];
    let err = Export::try_start(&args, &sock, None)
        .err()
        .expect("an overlay of another point is refused");
    assert!(
        err.contains(&format!("made over vm/{first}")) && err.contains("mix of two disks"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&ovf).unwrap(),
        overlay_before,
        "the overlay is untouched"
    );
    assert_eq!(std::fs::read(&map).unwrap(), map_before, "its map too");

    // Over its own point it still opens, with its write.
    let e = Export::start(&repo, "vm", &first, &sock, &["--writable", s(&ovf)]);
    let o = std::process::Command::new("qemu-io")
        .args(["-f", "raw", "-c", "read -P 7 1M 64k", &e.uri()])
        .output()
        .unwrap();
    assert!(
        o.status.success() && !bulwark_testkit::text(&o).contains("fail"),
        "{}",
        bulwark_testkit::text(&o)
    );
}
