//! Live sources over the network (issue 15, docs/sources.md, docs/protocol.md `GetParentCbt`,
//! `ParentCbt`, `Cbt`): a qcow2 backed up with `--cbt` to a real `bulwark-repo serve` as an
//! unprivileged user over TLS; the incremental fetches the parent's CBT record from the
//! server, reads only the dirty blocks, and restores over the network exactly as
//! `qemu-img convert` gives the image. Needs root (the service user) and qemu-utils.

use std::path::Path;
use std::process::Command;

use bulwark_testkit::run_ok;
use bulwark_testkit::serve::Service;
use bulwark_testkit::{can_run, images};

fn raw_of(img: &Path) -> Vec<u8> {
    let out = img.with_extension("raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-U", "-O", "raw"])
            .arg(img)
            .arg(&out),
    );
    std::fs::read(&out).unwrap()
}

#[test]
fn a_cbt_incremental_over_the_network_reads_only_the_dirty_blocks() {
    let t = "a_cbt_incremental_over_the_network_reads_only_the_dirty_blocks";
    if !can_run(
        t,
        "creating the unprivileged service user",
        &["qemu-img", "qemu-io", "qemu-storage-daemon"],
    ) {
        return;
    }
    let svc = Service::start(&[]);
    svc.enroll("c1");
    let img = svc.path("vm.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("64M"),
    );
    images::qemu_io(&img, &["write -P 3 0 12M"]);
    let c1 = svc.bulwark("c1");
    let backup = || c1.backup_json("vm", &img, &["--cbt"]);
    let full = backup();
    assert_eq!(full["kind"], "full");
    images::qemu_io(&img, &["write -P 9 2M 64k", "write -P 8 40M 64k"]);
    let r = backup();
    assert_eq!(r["kind"], "incremental");
    assert_eq!(r["cbt"]["used"], true, "{r}");
    assert_eq!(r["bytes_read"], 2 << 20, "{r}");
    let out = svc.path("restored.img");
    let o = c1.restore("vm", &out, &[]);
    assert!(o.status.success());
    assert!(
        std::fs::read(&out).unwrap() == raw_of(&img),
        "the restore differs from the image"
    );
}
