//! Test images and the checks run on them: a disk image of random, compressible and zero
//! stretches, a change to it between two backups, and `qemu-img compare` of an image with
//! what an NBD export (or any other raw target) serves.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::Rng;

/// Writes a disk image of `mib` MiB at `path`: 192 KiB stretches that are in turn random,
/// compressible (`q`), random and zero, from `seed`.
pub fn mixed(path: &Path, seed: u64, mib: usize) {
    let mut rng = Rng::new(seed);
    let mut data = rng.bytes(mib << 20);
    for (i, chunk) in data.chunks_mut(192 << 10).enumerate() {
        match i % 4 {
            1 => chunk.fill(b'q'),
            3 => chunk.fill(0),
            _ => {}
        }
    }
    std::fs::write(path, data).unwrap();
}

/// Overwrites four random 100 000-byte stretches of the file at `path` (from `seed`), as a
/// disk changes between two backups.
pub fn change(path: &Path, seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut rng = Rng::new(seed);
    for _ in 0..4 {
        let at = rng.below(len - 100_000);
        f.write_all_at(&rng.bytes(100_000), at).unwrap();
    }
}

/// Asserts that `qemu-img compare` finds the raw image `src` and the raw `target` (a file or
/// an NBD URI) byte-identical, showing qemu-img's output when they are not.
pub fn qemu_compare(src: &Path, target: &str) {
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(src)
        .arg(target)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img compare {} {target}: {}",
        src.display(),
        crate::text(&o)
    );
}

/// The extents `qemu-img map --output=json` reports for the raw `target` (a file or an NBD
/// URI): each with its `start`, `length`, `zero` and `data`.
pub fn qemu_map(target: &str) -> serde_json::Value {
    let o = Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "raw", target])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img map {target}: {}",
        crate::text(&o)
    );
    let map: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(map.is_array(), "qemu-img map {target}: {map}");
    map
}

/// The names of the persistent dirty bitmaps of the qcow2 image `img` (`qemu-img info`).
pub fn qcow2_bitmaps(img: &Path) -> Vec<String> {
    let o = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img info {}: {}",
        img.display(),
        crate::text(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.pointer("/format-specific/data/bitmaps")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .map(|b| b["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `qemu-io -f qcow2 -c CMD …` on the qcow2 image `img` (e.g. `write -P 9 2M 64k`),
/// which must succeed.
pub fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let o = c.arg(img).output().unwrap();
    assert!(
        o.status.success(),
        "qemu-io {cmds:?} {}: {}",
        img.display(),
        crate::text(&o)
    );
}

/// Writes 64 KiB of `pattern` at each of `offsets` into the qcow2 image `img`.
pub fn qcow2_write_64k(img: &Path, offsets: &[u64], pattern: u8) {
    let cmds: Vec<String> = offsets
        .iter()
        .map(|o| format!("write -P {pattern} {o} 64k"))
        .collect();
    qemu_io(img, &cmds.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Writes a 64 MiB qcow2 image at `img` holding 6 MiB of random data from `seed` at its
/// start and 1 MiB of `marker`, repeated, at 8 MiB (a plaintext no encrypted repository file
/// may contain: [`crate::fs::assert_no_marker`]).
pub fn qcow2_with_marker(img: &Path, seed: u64, marker: &[u8]) {
    const MIB: u64 = 1 << 20;
    let raw = img.with_extension("raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(64 * MIB).unwrap();
    f.write_all_at(&Rng::new(seed).bytes(6 << 20), 0).unwrap();
    let text: Vec<u8> = marker.iter().copied().cycle().take(1 << 20).collect();
    f.write_all_at(&text, 8 * MIB).unwrap();
    drop(f);
    crate::run_ok(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(img),
    );
    std::fs::remove_file(&raw).unwrap();
}
