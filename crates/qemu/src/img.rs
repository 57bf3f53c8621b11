//! Image formats, probed from the content.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::{tool, QemuError, Result};

/// The format the first bytes of an image file say it is, as QEMU's probes decide it; `None`
/// for raw (no known header). A LUKS container is reported as `luks` (it needs a key).
/// A block device is never probed and always `None`: its first bytes are the disk's own (on
/// a VM's logical volume, the guest's), so a header there is content, not a format.
pub fn probe_format(path: &Path) -> Result<Option<&'static str>> {
    let io = |action| {
        move |source| QemuError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    // Only files have a format to probe; a block device is raw (above), and anything else
    // (a FIFO given by mistake would block the open until a writer comes) is left to the raw
    // path, which refuses it with the reason.
    let ft = std::fs::metadata(path)
        .map_err(io("reading metadata of"))?
        .file_type();
    if !ft.is_file() {
        return Ok(None);
    }
    let f = File::open(path).map_err(io("opening"))?;
    let mut head = [0u8; 512];
    let mut n = 0;
    let mut r = &f;
    while n < head.len() {
        match r
            .read(&mut head[n..])
            .map_err(io("reading the header of"))?
        {
            0 => break,
            k => n += k,
        }
    }
    Ok(probe_bytes(&head[..n]))
}

/// The image formats of QEMU's block layer that hold a disk inside a container file
/// (QEMU's driver names): what `--format` may name besides `raw`, and, with `raw` and `luks`,
/// the format drivers a QMP block node can have ([`is_format_driver`]).
pub const IMAGE_FORMATS: &[&str] = &[
    "qcow2",
    "qcow",
    "vmdk",
    "vdi",
    "vhdx",
    "vpc",
    "qed",
    "parallels",
    "dmg",
    "cloop",
    "bochs",
];

/// Whether a block node of QEMU driver `driver` is a format node: it reads its `file` child as
/// a container (qcow2's clusters and metadata, a raw node's offset and size, a LUKS header)
/// and shows the disk inside.
pub fn is_format_driver(driver: &str) -> bool {
    matches!(driver, "raw" | "luks") || IMAGE_FORMATS.contains(&driver)
}

/// [`probe_format`] of the first bytes (at least 512 when the image has them).
pub fn probe_bytes(h: &[u8]) -> Option<&'static str> {
    let at = |o: usize, m: &[u8]| h.len() >= o + m.len() && &h[o..o + m.len()] == m;
    if at(0, b"QFI\xfb") {
        let version = h
            .get(4..8)
            .map(|v| u32::from_be_bytes(v.try_into().expect("4")));
        return Some(if version == Some(1) { "qcow" } else { "qcow2" });
    }
    if at(0, b"QED\0") {
        return Some("qed");
    }
    if at(0, b"KDMV") || at(0, b"COWD") || at(0, b"# Disk DescriptorFile") {
        return Some("vmdk");
    }
    if at(0x40, &0xbeda_107f_u32.to_le_bytes()) {
        return Some("vdi");
    }
    if at(0, b"vhdxfile") {
        return Some("vhdx");
    }
    if at(0, b"conectix") {
        return Some("vpc");
    }
    if at(0, b"WithoutFreeSpace") || at(0, b"WithouFreSpacExt") {
        return Some("parallels");
    }
    if at(0, b"Bochs Virtual HD Image") {
        return Some("bochs");
    }
    if at(0, b"LUKS\xba\xbe") {
        return Some("luks");
    }
    None
}

/// A persistent dirty bitmap stored in an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageBitmap {
    pub name: String,
    pub granularity: u64,
    /// `in-use`: the image was not closed cleanly since, the bitmap cannot be trusted.
    pub in_use: bool,
    /// `auto`: enabled, it records writes.
    pub auto: bool,
}

/// What `qemu-img info` says of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: String,
    pub virtual_size: u64,
    pub backing: Option<String>,
    /// Other files reading the disk opens besides the image and its backing file: an
    /// external data file (qcow2 `data_file`), the extents of a vmdk that are not the image.
    pub references: Vec<String>,
    pub bitmaps: Vec<ImageBitmap>,
}

impl ImageInfo {
    /// Every other file reading the disk opens: the backing file, then [`Self::references`].
    pub fn other_files(&self) -> Vec<&str> {
        self.backing
            .iter()
            .chain(&self.references)
            .map(String::as_str)
            .collect()
    }
}

#[derive(Deserialize)]
struct RawInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename")]
    backing: Option<String>,
    #[serde(rename = "format-specific")]
    specific: Option<RawSpecific>,
}

#[derive(Deserialize)]
struct RawSpecific {
    data: Option<RawData>,
}

#[derive(Deserialize)]
struct RawData {
    bitmaps: Option<Vec<RawBitmap>>,
    #[serde(rename = "data-file")]
    data_file: Option<String>,
    extents: Option<Vec<RawExtent>>,
}

#[derive(Deserialize)]
struct RawExtent {
    filename: Option<String>,
}

#[derive(Deserialize)]
struct RawBitmap {
    name: String,
    granularity: u64,
    #[serde(default)]
    flags: Vec<String>,
}

/// Runs `qemu-img info` on `path` read as `format` (`--force-share`: also while a VM has it).
pub fn info(path: &Path, format: &str) -> Result<ImageInfo> {
    let out = Command::new(tool("qemu-img")?)
        .args(["info", "--output=json", "--force-share", "-f", format])
        .arg(path)
        .output()
        .map_err(|source| QemuError::Spawn {
            tool: "qemu-img",
            source,
        })?;
    if !out.status.success() {
        return Err(QemuError::Failed {
            tool: "qemu-img",
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut i = parse_info(&out.stdout)?;
    // A vmdk's extents name the image itself too (monolithicSparse): only others count.
    let dir = path.parent().unwrap_or(Path::new("."));
    let me = path.canonicalize().ok();
    i.references.retain(|r| {
        let p = dir.join(r);
        p.canonicalize().ok().is_none_or(|c| Some(c) != me)
    });
    Ok(i)
}

fn parse_info(json: &[u8]) -> Result<ImageInfo> {
    let r: RawInfo = serde_json::from_slice(json).map_err(|e| QemuError::Failed {
        tool: "qemu-img",
        message: format!("unreadable `qemu-img info` output: {e}"),
    })?;
    let data = r.specific.and_then(|s| s.data);
    let mut references = Vec::new();
    if let Some(d) = &data {
        references.extend(d.data_file.clone());
        references.extend(
            d.extents
                .iter()
                .flatten()
                .filter_map(|e| e.filename.clone()),
        );
    }
    let bitmaps = data
        .and_then(|d| d.bitmaps)
        .unwrap_or_default()
        .into_iter()
        .map(|b| ImageBitmap {
            in_use: b.flags.iter().any(|f| f == "in-use"),
            auto: b.flags.iter().any(|f| f == "auto"),
            name: b.name,
            granularity: b.granularity,
        })
        .collect();
    Ok(ImageInfo {
        format: r.format,
        virtual_size: r.virtual_size,
        backing: r.backing,
        references,
        bitmaps,
    })
}

/// Reads `len` bytes at `offset` of a file (for probes of block devices and images).
pub fn read_at(f: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_headers_not_their_names() {
        let mut h = vec![0u8; 512];
        assert_eq!(probe_bytes(&h), None);
        h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
        assert_eq!(probe_bytes(&h), Some("qcow2"));
        h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x01");
        assert_eq!(probe_bytes(&h), Some("qcow"));
        let mut v = vec![0u8; 512];
        v[0x40..0x44].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
        assert_eq!(probe_bytes(&v), Some("vdi"));
        assert_eq!(probe_bytes(b"vhdxfile\0\0\0"), Some("vhdx"));
        assert_eq!(probe_bytes(b"KDMV\x01\0\0\0"), Some("vmdk"));
        assert_eq!(probe_bytes(b"QF"), None);
    }

    #[test]
    fn qemu_img_info_json_gives_size_and_bitmaps() {
        let j = br#"{"virtual-size": 67108864, "filename": "a.qcow2", "format": "qcow2",
          "format-specific": {"type": "qcow2", "data": {"compat": "1.1",
          "bitmaps": [{"flags": ["auto"], "name": "b0", "granularity": 65536},
                      {"flags": ["in-use", "auto"], "name": "b1", "granularity": 1048576}]}}}"#;
        let i = parse_info(j).unwrap();
        assert_eq!(i.virtual_size, 64 << 20);
        assert_eq!(i.bitmaps.len(), 2);
        assert!(i.bitmaps[0].auto && !i.bitmaps[0].in_use);
        assert!(i.bitmaps[1].in_use);
        assert_eq!(i.bitmaps[1].granularity, 1 << 20);
    }
}
