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
    crate::run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(src)
            .arg(target),
    );
}

/// Creates an empty qcow2 image of `size` bytes at `img`.
pub fn qcow2_create(img: &Path, size: u64) {
    crate::run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(img)
            .arg(size.to_string()),
    );
}

/// Creates a qcow2 image of `size` bytes at `img` holding `data` from its start (written by
/// `qemu-io write -s` from a file next to it, removed after).
pub fn qcow2_holding(img: &Path, size: u64, data: &[u8]) {
    qcow2_create(img, size);
    let mut src = img.as_os_str().to_owned();
    src.push(".data");
    std::fs::write(&src, data).unwrap();
    let write = format!("write -s {} 0 {}", Path::new(&src).display(), data.len());
    qemu_io(img, &[&write]);
    std::fs::remove_file(&src).unwrap();
}

/// The disk inside the image `img` (any format qemu-img reads, also one a running QEMU holds
/// open), as `qemu-img convert -U -O raw` gives it.
pub fn raw_of(img: &Path) -> Vec<u8> {
    let out = img.with_extension("convert.raw");
    crate::run_ok(
        Command::new("qemu-img")
            .args(["convert", "-U", "-O", "raw"])
            .arg(img)
            .arg(&out),
    );
    let disk = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    disk
}

/// Asserts that `qemu-img compare -U` finds the raw image `raw` byte-identical with the disk
/// inside the qcow2 image `qcow2` (which a running QEMU may hold open).
pub fn qemu_compare_qcow2(raw: &Path, qcow2: &Path) {
    crate::run_ok(
        Command::new("qemu-img")
            .args(["compare", "-U", "-f", "raw", "-F", "qcow2"])
            .arg(raw)
            .arg(qcow2),
    );
}

/// Runs `qemu-img bitmap OP… IMG NAME` on the qcow2 image `img` (`op`: `--add`, `--remove`,
/// `--enable`, `--disable`, with their options), which must succeed.
pub fn qcow2_bitmap(img: &Path, op: &[&str], name: &str) {
    crate::run_ok(
        Command::new("qemu-img")
            .arg("bitmap")
            .args(op)
            .arg(img)
            .arg(name),
    );
}

/// The extents `qemu-img map --output=json` reports for the raw `target` (a file or an NBD
/// URI): each with its `start`, `length`, `zero` and `data`.
pub fn qemu_map(target: &str) -> serde_json::Value {
    let out =
        crate::run_ok(Command::new("qemu-img").args(["map", "--output=json", "-f", "raw", target]));
    let map: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(map.is_array(), "qemu-img map {target}: {map}");
    map
}

/// The names of the persistent dirty bitmaps of the qcow2 image `img` (`qemu-img info`).
pub fn qcow2_bitmaps(img: &Path) -> Vec<String> {
    let out = crate::run_ok(
        Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(img),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
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
    crate::run_ok(c.arg(img));
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

/// Writes a GPT disk image of `mib` MiB at `img` with one Linux partition per
/// `(start, sectors, tree)` (in 512-byte sectors), each an ext4 filesystem holding the files
/// of the folder `tree` (`sfdisk` and `mkfs.ext4 -d`: no root needed).
pub fn gpt_ext4_disk(img: &Path, mib: u64, parts: &[(u64, u64, &Path)]) {
    std::fs::File::create(img)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    let mut script = String::from("label: gpt\n");
    for (start, sectors, _) in parts {
        script.push_str(&format!("start={start}, size={sectors}, type=linux\n"));
    }
    let mut sf = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(img)
        .stdin(std::process::Stdio::piped())
        .env("PATH", crate::cmd::PATH_ENV)
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sf.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(sf.wait().unwrap().success(), "sfdisk {}", img.display());
    for (start, sectors, tree) in parts {
        crate::run_ok(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-E"])
                .arg(format!("offset={}", start * 512))
                .arg("-d")
                .arg(tree)
                .arg(img)
                .arg(format!("{}k", sectors * 512 / 1024))
                .env("PATH", crate::cmd::PATH_ENV),
        );
    }
}
