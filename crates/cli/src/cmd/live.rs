//! `bulwark backup` of live sources: NBD exports, image files read through QEMU, running
//! disks through QMP, with changed-block tracking (docs/sources.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_engine::{backup_live, BackupOptions, LiveOptions, LiveSource, WriteKey};

use crate::output::Output;
use crate::repo::{BackupReport, Repo};

/// The source flags of `bulwark backup` for live and virtual-machine disks.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LiveArgs {
    /// The image's format. Default: probed from its content (qcow2, vmdk, vdi, vhdx, … are
    /// read through qemu-nbd); `raw` backs up the file's bytes as they are.
    #[arg(long)]
    pub format: Option<String>,
    /// Changed-block tracking managed by Bulwark: a persistent dirty bitmap per restore point
    /// (qcow2 images, and --qmp disks); an incremental reads only what changed.
    #[arg(long)]
    pub cbt: bool,
    /// Read only the extents this bitmap of the NBD export marks dirty (its owner — libvirt,
    /// Proxmox, `qemu-nbd -B NAME` — manages it).
    #[arg(long, value_name = "NAME")]
    pub dirty_bitmap: Option<String>,
    /// A running disk: the QMP socket of its QEMU process (VM or qemu-storage-daemon).
    /// Bulwark takes a consistent point in time by image fleecing.
    #[arg(long, value_name = "SOCKET", requires = "node")]
    pub qmp: Option<PathBuf>,
    /// The disk's block node in that QEMU process.
    #[arg(long, value_name = "NODE", requires = "qmp")]
    pub node: Option<String>,
    /// That process's NBD server socket, when it already runs one (else Bulwark starts one).
    #[arg(long, value_name = "PATH", requires = "qmp")]
    pub nbd_socket: Option<PathBuf>,
    /// Freeze the guest's filesystems around the point in time (QEMU guest agent socket).
    #[arg(long, value_name = "SOCKET", requires = "qmp")]
    pub guest_agent: Option<PathBuf>,
    /// Every Nth changed-block-tracking incremental reads and hashes the whole disk and
    /// reports any block the bitmap missed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cbt_verify_every: u32,
}

impl LiveArgs {
    /// The engine's options.
    pub fn options(&self) -> LiveOptions {
        LiveOptions {
            format: self.format.clone(),
            cbt: self.cbt,
            dirty_bitmap: self.dirty_bitmap.clone(),
            qmp: self.qmp.clone(),
            node: self.node.clone(),
            nbd_socket: self.nbd_socket.clone(),
            guest_agent: self.guest_agent.clone(),
            verify_every: self.cbt_verify_every,
        }
    }

    /// True when `source` must be read as a live source (not as a raw file or device).
    pub fn is_live(&self, source: &Path) -> bool {
        let o = self.options();
        if o.wants_live() || bulwark_nbd::is_nbd_uri(&source.to_string_lossy()) {
            return true;
        }
        match self.format.as_deref() {
            Some("raw") => false,
            Some(_) => true,
            // An unreadable file is left to the raw path, which says why.
            None => matches!(bulwark_qemu::probe_format(source), Ok(Some(_))),
        }
    }
}

impl Repo {
    /// A new restore point of `job` from a live source, encrypted with `key` when one is
    /// given (docs/encryption.md); a synthetic full after it when asked (local repositories).
    #[allow(clippy::too_many_arguments)]
    pub fn backup_live(
        &self,
        job: &str,
        source: &Path,
        opts: &BackupOptions,
        live: &LiveArgs,
        synthetic_full: bool,
        key: Option<&WriteKey>,
        out: &Output,
    ) -> anyhow::Result<BackupReport> {
        let path = match self {
            Repo::Local(p) => p,
            Repo::Remote { .. } if synthetic_full => anyhow::bail!(
                "--synthetic-full builds on the repository host: run `bulwark-repo synthesize` there"
            ),
            Repo::Remote { addr, config_dir } => {
                bulwark_sys::catch_interrupts();
                let src = LiveSource::open(source, &live.options(), job)
                    .with_context(|| format!("opening {}", source.display()))?;
                let pb = out.progress(src.size, "backup");
                let (s, cbt) = bulwark_remote::backup_remote_live(
                    config_dir,
                    addr,
                    job,
                    src,
                    opts,
                    key,
                    &|n| pb.inc(n),
                )
                .with_context(|| {
                    format!("backing up {} as job {job:?} to {addr}", source.display())
                })?;
                pb.finish_and_clear();
                return Ok(crate::repo::remote_report(
                    addr,
                    job,
                    &s,
                    cbt.mode.is_some().then_some(cbt),
                ));
            }
        };
        if bulwark_sys::effective_uid() == 0 && path.join("repository.toml").is_file() {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(path).map(|m| m.uid()).unwrap_or(0);
            if owner != 0 {
                anyhow::bail!(
                    "{} belongs to its service user: back up live sources as that user (sudo -u OWNER bulwark backup …), \
                     so nothing root-owned lands in the repository; nothing was written",
                    path.display()
                );
            }
        }
        bulwark_sys::catch_interrupts();
        let repo = crate::repo::open_local(path)?;
        let src = LiveSource::open(source, &live.options(), job)
            .with_context(|| format!("opening {}", source.display()))?;
        let pb = out.progress(src.size, "backup");
        let (s, cbt) = backup_live(&repo, job, src, opts, key, &|n| pb.inc(n))
            .with_context(|| format!("backing up {} as job {job:?}", source.display()))?;
        pb.finish_and_clear();
        let synth = synthetic_full
            .then(|| crate::repo::synthesize(&repo, job, &s))
            .transpose()?;
        Ok(crate::repo::local_report(
            &repo,
            &s,
            synth,
            cbt.mode.is_some().then_some(cbt),
        ))
    }
}

/// The lines `bulwark backup` prints about changed-block tracking; true when
/// verify-by-reading found blocks the bitmap missed.
pub fn print_cbt(r: &BackupReport) -> bool {
    let Some(c) = &r.cbt else { return false };
    let h = crate::output::human;
    if c.used {
        outln!(
            "  changed-block tracking: read {} for {} marked dirty by bitmap {} ({} of whole blocks); {} blocks referenced unread",
            h(r.counters.bytes_read),
            h(c.dirty_bytes),
            c.bitmap.as_deref().unwrap_or("?"),
            h(c.dirty_block_bytes),
            r.counters.blocks_referenced
        );
    } else if let Some(why) = &c.fallback_reason {
        outln!("note: changed-block tracking not used, the whole disk was read and hashed: {why}");
    }
    if let Some(b) = &c.new_bitmap {
        outln!("  changes from now on are tracked by bitmap {b}");
    }
    if let Some(e) = &c.cleanup_error {
        outln!("  WARNING: the point is sealed, but cleaning up in QEMU failed: {e}");
    }
    match &c.verify {
        Some(v) if v.missed_blocks > 0 => {
            outln!(
                "  WARNING: verify-by-reading found {} changed blocks the bitmap did not mark (first: {:?}); this point is correct (it was read in full), but the bitmap cannot be trusted",
                v.missed_blocks, v.missed
            );
            true
        }
        Some(_) => {
            outln!("  verify-by-reading: every changed block was marked by the bitmap");
            false
        }
        None => false,
    }
}
