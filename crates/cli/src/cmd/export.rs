//! `bulwark export`: a restore point as an NBD export (instant access, docs/instant-access.md).
//!
//! The point is opened once (locally, or through the repository service with `ReadBlocks`),
//! read through [`PointImage`] (every block checked against its hash, a bounded cache,
//! read-ahead) and served by the NBD server until SIGINT, SIGTERM or SIGHUP, which stop it
//! gracefully and remove its socket. With `--writable FILE` writes go to a copy-on-write
//! overlay file on this machine; the restore point is never written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bulwark_engine::{ImageError, PointBlocks, PointImage};
use bulwark_format::PointId;
use bulwark_nbd::proto::{EIO, STATE_HOLE, STATE_ZERO};
use bulwark_nbd::server::{BlockDevice, ExportOptions, Listen, ReadError, Server};
use serde::Serialize;

use crate::output::{human, Output, EXIT_OK};
use crate::repo::Repo;

/// Arguments of `bulwark export`.
#[derive(clap::Args)]
#[command(mut_args(super::job_help("The job to export from")))]
pub struct Args {
    #[command(flatten)]
    pub at: super::PointArg,
    /// Where to serve: `unix:PATH` (nbd+unix:///?socket=PATH, a socket only its owner may
    /// connect to) or `HOST:PORT` (nbd://HOST:PORT), a loopback address unless
    /// --allow-remote-clients.
    #[arg(long)]
    nbd: String,
    /// Serve on a TCP address that is not loopback. NBD has no login and no encryption:
    /// anyone who can reach the address reads the whole (decrypted) disk. Use it on a
    /// trusted storage network only.
    #[arg(long)]
    allow_remote_clients: bool,
    /// Name of the export (clients may also open the default export, "").
    #[arg(long)]
    name: Option<String>,
    /// Cache of decoded blocks, e.g. 64M; 0 turns the cache and read-ahead off.
    #[arg(long, default_value = "64M", value_parser = super::parse_size)]
    cache: u32,
    /// Make the export writable: writes go to this copy-on-write overlay file (created
    /// sparse if missing, reused with its bitmap FILE.map if present); the restore point is
    /// never written.
    #[arg(long, value_name = "FILE")]
    writable: Option<PathBuf>,
    /// Connections served at once.
    #[arg(long, default_value_t = 16)]
    max_connections: usize,
    #[command(flatten)]
    pub keys: super::KeyArgs,
}

/// What `bulwark export` serves, printed once it listens.
#[derive(Serialize)]
pub struct ExportReport {
    pub job: String,
    pub point: String,
    pub disk_size: u64,
    pub block_size: u32,
    pub uri: String,
    pub writable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<PathBuf>,
}

/// A restore point opened for random access, whichever side holds it.
pub trait DiskImage: Send + Sync {
    fn size(&self) -> u64;
    fn block_size(&self) -> u32;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError>;
    fn extents(&self, offset: u64, len: u64, max_runs: usize) -> Vec<(u64, bool)>;
}

impl<S: PointBlocks + 'static> DiskImage for PointImage<S> {
    fn size(&self) -> u64 {
        PointImage::size(self)
    }
    fn block_size(&self) -> u32 {
        PointImage::block_size(self)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        PointImage::read_at(self, offset, buf)
    }
    fn extents(&self, offset: u64, len: u64, max_runs: usize) -> Vec<(u64, bool)> {
        PointImage::extents(self, offset, len, max_runs)
    }
}

/// An opened point: its id and the image.
pub struct Opened {
    pub point: PointId,
    pub image: Arc<dyn DiskImage>,
}

/// [`open`] for a command's `--repo`, `--job`, `--point` and key options.
pub fn open_point(
    repo: &Repo,
    at: &super::PointArg,
    keys: &super::KeyArgs,
    cache: u32,
) -> anyhow::Result<Opened> {
    let point = at.id()?;
    let key = keys.load()?;
    open(repo, at.job(), point, u64::from(cache), key.as_ref())
}

/// Opens restore point `point` of `job` for random access, locally or over the network; an
/// encrypted point is decrypted here with `key` (docs/encryption.md).
pub fn open(
    repo: &Repo,
    job: &str,
    point: Option<PointId>,
    cache: u64,
    key: Option<&bulwark_crypto::KeyFile>,
) -> anyhow::Result<Opened> {
    bulwark_format::validate_name("job", job)?;
    match repo {
        Repo::Local(p) => {
            let r = crate::repo::open_local(p)?;
            let chain = r
                .open_point(job, point)
                .with_context(|| format!("opening job {job:?} of {}", p.display()))?;
            let id = chain.point().meta.point;
            let encrypted = chain
                .point()
                .meta
                .extension(bulwark_format::EXT_ENCRYPTION)
                .is_some();
            let image: Arc<dyn DiskImage> = match (encrypted, key) {
                (false, None) => Arc::new(PointImage::new(chain, cache)),
                (true, Some(k)) => Arc::new(PointImage::new(
                    bulwark_engine::Decrypting::chain(chain, k)?,
                    cache,
                )),
                (true, None) => anyhow::bail!("{}", needs_key(id, job)),
                (false, Some(_)) => anyhow::bail!("{}", needs_no_key(id, job)),
            };
            Ok(Opened { point: id, image })
        }
        Repo::Remote { addr, config_dir } => {
            let rp = bulwark_remote::RemotePoint::open(config_dir, addr, job, point)
                .with_context(|| format!("opening job {job:?} on {addr}"))?;
            let id = rp.summary.point;
            let image: Arc<dyn DiskImage> = match (rp.encryption.clone(), key) {
                (None, None) => Arc::new(PointImage::new(rp, cache)),
                // The service sent the sessions of every file the point reads; this client
                // decrypts (docs/encryption.md), the service holds no key.
                (Some(record), Some(k)) => Arc::new(PointImage::new(
                    bulwark_engine::Decrypting::remote(rp, id, &record, k)?,
                    cache,
                )),
                (Some(_), None) => anyhow::bail!("{}", needs_key(id, job)),
                (None, Some(_)) => anyhow::bail!("{}", needs_no_key(id, job)),
            };
            Ok(Opened { point: id, image })
        }
    }
}

/// A point is encrypted and no key was given.
fn needs_key(id: PointId, job: &str) -> String {
    format!(
        "point {id} of job {job:?} is encrypted: give its key with --key FILE, or \
         --restore-key FILE for a write-only client's point"
    )
}

/// A key was given for a point that is not encrypted.
fn needs_no_key(id: PointId, job: &str) -> String {
    format!("point {id} of job {job:?} is not encrypted: open it without --key/--restore-key")
}

/// The NBD view of a point image: a damaged block is an EIO for exactly its range.
pub struct NbdDisk(pub Arc<dyn DiskImage>);

impl BlockDevice for NbdDisk {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.0.read_at(offset, buf).map_err(|e| {
            let bs = u64::from(self.0.block_size());
            let start = (e.block() * bs).max(offset);
            let end = ((e.block() + 1) * bs).min(offset + buf.len() as u64);
            ReadError {
                offset: start,
                len: end.saturating_sub(start),
                errno: EIO,
                message: e.to_string(),
            }
        })
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, u32)>, ReadError> {
        Ok(self
            .0
            .extents(offset, len, 4096)
            .into_iter()
            .map(|(l, zero)| (l, if zero { STATE_HOLE | STATE_ZERO } else { 0 }))
            .collect())
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP and returns a waiter for them: a signal then ends the
/// wait instead of the process, so cleanup runs.
pub fn termination_signals() -> anyhow::Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing the signal handlers")
}

/// Opens the copy-on-write overlay `path` (`--writable`) over `base`, the restore point
/// `base_id` names (`JOB/POINTID`): an overlay made over another point is refused. One this export creates
/// is made 0600 with its bitmap before the server starts, so before any write lands in it: it
/// will hold plaintext of the point's disk, as a restore target does.
fn open_overlay(
    base: Arc<dyn BlockDevice>,
    path: &Path,
    base_id: &str,
) -> anyhow::Result<bulwark_nbd::overlay::Overlay> {
    use std::os::unix::fs::PermissionsExt;
    let ctx = || format!("opening the overlay {} (--writable)", path.display());
    let created = path.symlink_metadata().is_err();
    let overlay =
        bulwark_nbd::overlay::Overlay::open(base, path, base_id.as_bytes()).with_context(ctx)?;
    if created {
        // Named as the overlay names its bitmap.
        let mut map = path.file_name().unwrap_or_default().to_os_string();
        map.push(".map");
        for f in [path.to_path_buf(), path.with_file_name(map)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private (mode 0600)", f.display()))
                .with_context(ctx)?;
        }
    }
    Ok(overlay)
}

/// Where `--nbd` serves, refused when it is a TCP address that is not loopback without
/// `allow_remote` (the NBD export has no authentication or TLS of its own).
fn listen_address(nbd: &str, allow_remote: bool) -> anyhow::Result<Listen> {
    let listen = Listen::parse(nbd)
        .map_err(anyhow::Error::msg)
        .context("--nbd")?;
    if let Listen::Tcp(a) = &listen {
        if !a.ip().is_loopback() && !allow_remote {
            anyhow::bail!(
                "--nbd {a} is not a loopback address: NBD has no login and no encryption, so anyone who can reach that address would read the whole disk (decrypted, for an encrypted point); \
                 serve on a Unix socket (--nbd unix:PATH, its owner's only) or on 127.0.0.1 and reach it through an ssh tunnel, or add --allow-remote-clients on a trusted storage network"
            );
        }
    }
    Ok(listen)
}

/// Runs `bulwark export`.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    // Before anything is opened: a refused address must not cost a key's passphrase.
    let listen = listen_address(&a.nbd, a.allow_remote_clients)?;
    let repo = &a.at.open(config_dir);
    let mut signals = termination_signals()?;
    let opened = open_point(repo, &a.at, &a.keys, a.cache)?;
    let disk_size = opened.image.size();
    let block_size = opened.image.block_size();
    let base: Arc<dyn BlockDevice> = Arc::new(NbdDisk(opened.image.clone()));
    let dev: Arc<dyn BlockDevice> = match &a.writable {
        Some(f) => Arc::new(open_overlay(
            base,
            f,
            &format!("{}/{}", a.at.job(), opened.point),
        )?),
        None => base,
    };
    let name = a.name.clone().unwrap_or_else(|| a.at.job().to_string());
    let opts = ExportOptions {
        name: name.clone(),
        description: format!("bulwark job {} point {}", a.at.job(), opened.point),
        max_connections: a.max_connections.max(1),
        ..Default::default()
    };
    let server = Server::start(&listen, dev, opts)
        .with_context(|| format!("listening on {} (--nbd)", a.nbd))?;
    let uri = server.listen().uri("");
    if let Listen::Tcp(bound) = server.listen() {
        if !bound.ip().is_loopback() {
            eprintln!(
                "WARNING: serving on {bound}, reachable from other machines: NBD has no login and \
                 no encryption, anyone who reaches it reads the whole disk"
            );
        }
    }
    let report = ExportReport {
        job: a.at.job().to_string(),
        point: opened.point.to_hex(),
        disk_size,
        block_size,
        uri: uri.clone(),
        writable: a.writable.is_some(),
        overlay: a.writable.clone(),
    };
    if out.json {
        out.json(&report);
    } else {
        outln!(
            "exporting point {} of job {} ({} disk) {} at {uri}\n  e.g. qemu-img info {uri}\n  stop with Ctrl-C or SIGTERM",
            report.point,
            report.job,
            human(disk_size),
            if a.writable.is_some() {
                "writable through its overlay"
            } else {
                "read-only"
            },
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let sig = signals.forever().next();
    tracing::info!(?sig, "stopping the export");
    let stats = server.stats();
    let (reqs, bytes, errors) = (
        stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        stats.bytes_read.load(std::sync::atomic::Ordering::Relaxed),
        stats.read_errors.load(std::sync::atomic::Ordering::Relaxed),
    );
    server.stop();
    if !out.json {
        eprintln!(
            "export stopped: {reqs} requests, {} read, {errors} read errors",
            human(bytes)
        );
    }
    Ok(EXIT_OK)
}
