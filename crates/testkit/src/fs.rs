//! Scratch folders, loop devices, mounts and loop-mounted ext4/XFS filesystems (root only
//! except [`Scratch`]). Every one is released by its `Drop`, also when a test panics.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cmd::{sh, sh_quiet};
use crate::user::unique;

/// A temporary folder under /tmp (mode 0755); on drop its immutable and append-only
/// attributes are cleared and it is removed.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new folder named `<prefix><unique>`.
    pub fn new(prefix: &str) -> Scratch {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        sh_quiet(&format!(
            "chattr -R -i -a '{}' 2>/dev/null",
            self.path.display()
        ));
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loop device over an image file, detached on drop.
pub struct LoopDev {
    pub dev: PathBuf,
}

impl LoopDev {
    pub fn attach(image: &Path) -> LoopDev {
        let dev = sh(&format!("losetup --find --show '{}'", image.display()));
        LoopDev {
            dev: dev.trim().into(),
        }
    }

    /// The device path as text (for command lines).
    pub fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        sh_quiet(&format!("losetup -d '{}'", self.dev.display()));
    }
}

/// A mount point, unmounted (lazily if busy) on drop.
pub struct Mount(pub PathBuf);

impl Mount {
    /// Mounts `what` (a device or, with `-o loop`, an image) on `on`.
    pub fn new(options: &str, what: &Path, on: &Path) -> Mount {
        sh(&format!(
            "mount {options} '{}' '{}'",
            what.display(),
            on.display()
        ));
        Mount(on.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let m = self.0.display();
        sh_quiet(&format!(
            "chattr -R -i -a '{m}' 2>/dev/null; umount '{m}' || umount -l '{m}'"
        ));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Ext4,
    Xfs,
}

/// A fresh filesystem on a loop-mounted image in a scratch folder, mounted at `mnt`
/// (mode 0755); on drop every attribute is cleared, it is unmounted and the image removed.
pub struct LoopFs {
    pub kind: FsKind,
    pub mnt: PathBuf,
    // Field order: unmount before the folder is removed.
    _mount: Mount,
    _dir: Scratch,
}

impl LoopFs {
    pub fn new(kind: FsKind) -> LoopFs {
        let size = match kind {
            FsKind::Ext4 => 64 << 20,
            FsKind::Xfs => 320 << 20,
        };
        LoopFs::with_size(kind, size)
    }

    /// A filesystem of `bytes` (XFS needs at least 300 MiB).
    pub fn with_size(kind: FsKind, bytes: u64) -> LoopFs {
        let dir = Scratch::new("bwfs");
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img).unwrap().set_len(bytes).unwrap();
        sh(&match kind {
            FsKind::Ext4 => format!("mkfs.ext4 -q -F '{}'", img.display()),
            FsKind::Xfs => format!("mkfs.xfs -q -m reflink=1 '{}'", img.display()),
        });
        let mount = Mount::new("-o loop", &img, &mnt);
        std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
        LoopFs {
            kind,
            mnt,
            _mount: mount,
            _dir: dir,
        }
    }
}

/// Every regular file below `dir`, sorted; symbolic links are neither followed nor listed.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display())) {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The entries of `dir` (not below it) whose names start with `prefix`, sorted.
pub fn entries_starting_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    out.sort();
    out
}

/// The restore-point files (`*.bwrp`) below `dir`, sorted.
pub fn point_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = files_under(dir);
    v.retain(|p| p.extension().is_some_and(|x| x == "bwrp"));
    v
}

/// Asserts that `dir` holds restore points and that no file below it contains the first 16
/// bytes of `marker` (a plaintext written into the source of an encrypted backup).
pub fn assert_no_marker(dir: &Path, marker: &[u8]) {
    let needle = &marker[..16.min(marker.len())];
    let all = files_under(dir);
    assert!(
        all.iter()
            .any(|p| p.extension().is_some_and(|e| e == "bwrp")),
        "no restore point below {}",
        dir.display()
    );
    for p in all {
        let b = std::fs::read(&p).unwrap();
        assert!(
            !b.windows(needle.len()).any(|w| w == needle),
            "{} holds plaintext",
            p.display()
        );
    }
}

/// XORs the byte at `at` of the file at `path` with `mask`, in place: a bit rotted on disk,
/// or an edit by someone who can write the file.
pub fn flip_byte(path: &Path, at: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {} to damage it: {e}", path.display()));
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ mask], at).unwrap();
}
