//! `bulwark key`: create, show, change the passphrase of, rotate and copy to paper the keys of
//! encrypted backups (docs/encryption.md). Also loads the keys `backup`, `restore` and job
//! files name.

use std::io::{Read as _, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bulwark_crypto::{Argon2Params, KeyFile, KeyKind, PublicKeyFile};
use bulwark_engine::WriteKey;

use crate::output::{Output, EXIT_OK};

/// Said by `key create` and in docs/encryption.md: there is no way back without a key.
pub const LOSS_WARNING: &str =
    "IMPORTANT: every encrypted backup can be read only with this key. Bulwark keeps no copy \
     and cannot recover it: losing every copy of the key file (or its passphrase) loses the data. \
     Keep a second copy offline now, e.g. `bulwark key paper FILE` printed and stored safely.";

/// Arguments of `bulwark key`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: KeyCmd,
}

#[derive(clap::Subcommand)]
enum KeyCmd {
    /// Create a key file. Symmetric by default (backs up and restores); with --write-only, a
    /// private restore key (keep it offline) and a public key for the clients, which can back
    /// up but never read. The passphrase is asked on the terminal, or read from
    /// $BULWARK_PASSPHRASE.
    Create {
        /// Where to write the key file (the private restore key with --write-only).
        #[arg(long)]
        out: PathBuf,
        /// Create a write-only key pair: --out gets the private restore key, --public the
        /// public key for the clients.
        #[arg(long, requires = "public")]
        write_only: bool,
        /// Where to write the public key (with --write-only).
        #[arg(long)]
        public: Option<PathBuf>,
    },
    /// Show what a key file is and the fingerprints of its key generations (secret files ask
    /// for the passphrase).
    Show { file: PathBuf },
    /// Change the passphrase of a key file: the old from $BULWARK_PASSPHRASE or the terminal,
    /// the new from $BULWARK_NEW_PASSPHRASE or the terminal.
    Passwd { file: PathBuf },
    /// Add a new key generation: new chains use it, old chains stay readable with the older
    /// ones, which the file keeps. For a restore key, also writes the new public key.
    Rotate {
        file: PathBuf,
        /// Where to write the new public key (restore keys).
        #[arg(long)]
        public: Option<PathBuf>,
    },
    /// Print a paper copy of a key file (it stays protected by its passphrase); `key unpaper`
    /// turns it back into the file.
    Paper { file: PathBuf },
    /// Rebuild a key file from its paper copy, read from standard input.
    Unpaper {
        #[arg(long)]
        out: PathBuf,
    },
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A passphrase from `var` or, when it is unset, the terminal (`confirm`: asked twice).
fn passphrase(
    var: &str,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if let Ok(p) = std::env::var(var) {
        return Ok(zeroize::Zeroizing::new(p));
    }
    let p = zeroize::Zeroizing::new(
        rpassword::prompt_password(prompt)
            .with_context(|| format!("reading the passphrase from the terminal (or set {var})"))?,
    );
    if confirm {
        let again = zeroize::Zeroizing::new(
            rpassword::prompt_password("Same passphrase again: ")
                .context("reading the passphrase")?,
        );
        if *again != *p {
            bail!("the two passphrases differ; nothing was written");
        }
    }
    Ok(p)
}

/// Reads a key file of at most 64 KiB.
fn read_key_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("reading key file {}", path.display()))?;
    if meta.len() > 64 * 1024 {
        bail!(
            "{} is {} bytes: not a Bulwark key file",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))
}

/// Opens a secret key file (symmetric or restore) with its passphrase.
pub fn load_secret(path: &Path) -> anyhow::Result<KeyFile> {
    let b = read_key_bytes(path)?;
    let shown = path.display().to_string();
    // Say what the file is before asking for a passphrase it does not need.
    bulwark_crypto::kind_of(&b, &shown)?;
    let p = passphrase(
        "BULWARK_PASSPHRASE",
        &format!("Passphrase for {shown}: "),
        false,
    )?;
    Ok(KeyFile::decode(&b, p.as_bytes(), &shown)?)
}

/// Opens a write-only client's public key file.
pub fn load_public(path: &Path) -> anyhow::Result<PublicKeyFile> {
    let b = read_key_bytes(path)?;
    Ok(PublicKeyFile::decode(&b, &path.display().to_string())?)
}

/// The key a backup writes with, from `--key` or `--public-key` (at most one).
pub fn write_key(key: Option<&Path>, public: Option<&Path>) -> anyhow::Result<Option<WriteKey>> {
    Ok(match (key, public) {
        (Some(_), Some(_)) => bail!("give --key or --public-key, not both"),
        (Some(k), None) => {
            let kf = load_secret(k)?;
            if kf.kind != KeyKind::Symmetric {
                bail!(
                    "{} is {}: backups of write-only clients take the public key (--public-key)",
                    k.display(),
                    kf.kind.describe()
                );
            }
            Some(WriteKey::Symmetric(kf))
        }
        (None, Some(p)) => Some(WriteKey::Public(load_public(p)?)),
        (None, None) => None,
    })
}

/// The key a restore reads with, from `--key` or `--restore-key` (at most one).
pub fn read_key(key: Option<&Path>, restore: Option<&Path>) -> anyhow::Result<Option<KeyFile>> {
    let (path, want) = match (key, restore) {
        (Some(_), Some(_)) => bail!("give --key or --restore-key, not both"),
        (Some(k), None) => (k, KeyKind::Symmetric),
        (None, Some(r)) => (r, KeyKind::Restore),
        (None, None) => return Ok(None),
    };
    let kf = load_secret(path)?;
    if kf.kind != want {
        bail!("{} is {}", path.display(), kf.kind.describe());
    }
    Ok(Some(kf))
}

/// Writes a key file: a temporary file of mode 0600, fsynced, renamed over `path` (only when
/// `replace`), the folder fsynced.
fn write_key_file(path: &Path, data: &[u8], replace: bool) -> anyhow::Result<()> {
    if !replace && path.symlink_metadata().is_ok() {
        bail!(
            "{} exists; a key file is never overwritten (choose another name)",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsyncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("fsyncing folder {}", dir.display()))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn fp(id: [u8; 16]) -> String {
    hex::encode(id)
}

/// Paper form: 32 bytes a line as hex, each line with its number and a 4-digit check.
fn paper_lines(b: &[u8]) -> Vec<String> {
    b.chunks(32)
        .enumerate()
        .map(|(i, c)| {
            let mut h = blake3::Hasher::new();
            h.update(&(i as u32).to_le_bytes());
            h.update(c);
            format!(
                "{:03} {} {}",
                i + 1,
                hex::encode(c),
                &h.finalize().to_hex()[..4]
            )
        })
        .collect()
}

fn unpaper(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    for (n, line) in lines.enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [num, data, check] = parts[..] else {
            bail!("line {line:?} is not NUMBER HEX CHECK");
        };
        if num.parse::<usize>().ok() != Some(n + 1) {
            bail!("line {line:?}: expected line number {}", n + 1);
        }
        let bytes = hex::decode(data).with_context(|| format!("line {}: not hex", n + 1))?;
        if bytes.is_empty() || bytes.len() > 32 || out.len() > 64 * 1024 {
            bail!("line {}: wrong length", n + 1);
        }
        let mut h = blake3::Hasher::new();
        h.update(&(n as u32).to_le_bytes());
        h.update(&bytes);
        if h.finalize().to_hex()[..4] != *check {
            bail!(
                "line {} has a typo: its check {check} does not match; compare it with the paper again",
                n + 1
            );
        }
        out.extend_from_slice(&bytes);
    }
    if out.is_empty() {
        bail!("no lines of a paper copy on standard input");
    }
    Ok(out)
}

/// Runs `bulwark key`.
pub fn run(a: Args, out: &Output) -> anyhow::Result<i32> {
    match a.cmd {
        KeyCmd::Create {
            out: path,
            write_only,
            public,
        } => {
            let pass = passphrase(
                "BULWARK_PASSPHRASE",
                "New passphrase for the key file: ",
                true,
            )?;
            let (kf, public_file) = if write_only {
                let (k, p) = KeyFile::new_write_only(now())?;
                (k, Some(p))
            } else {
                (KeyFile::new_symmetric(now())?, None)
            };
            let bytes = kf.encode(pass.as_bytes(), Argon2Params::default())?;
            if let (Some(pp), Some(pf)) = (&public, &public_file) {
                if pp.symlink_metadata().is_ok() {
                    bail!(
                        "{} exists; a key file is never overwritten (choose another name)",
                        pp.display()
                    );
                }
                write_key_file(&path, &bytes, false)?;
                write_key_file(pp, &pf.encode(), false)?;
            } else {
                write_key_file(&path, &bytes, false)?;
            }
            let id = fp(kf.current().key_id());
            if out.json {
                out.json(&serde_json::json!({
                    "file": path, "public": public, "kind": if write_only { "restore" } else { "symmetric" },
                    "fingerprint": id, "warning": LOSS_WARNING,
                }));
            } else {
                match &public {
                    Some(p) => outln!(
                        "created the private restore key {} and the public key {} (fingerprint {id});\n\
                         give clients only the public key (bulwark backup --public-key {}), keep the private key offline",
                        path.display(), p.display(), p.display()
                    ),
                    None => outln!("created the symmetric key file {} (fingerprint {id})", path.display()),
                }
                eprintln!("{LOSS_WARNING}");
            }
        }
        KeyCmd::Show { file } => {
            let b = read_key_bytes(&file)?;
            let shown = file.display().to_string();
            let kind = bulwark_crypto::kind_of(&b, &shown)?;
            let gens: Vec<(String, i64)> = if kind == KeyKind::Public {
                let p = PublicKeyFile::decode(&b, &shown)?;
                vec![(fp(p.key_id()), p.created)]
            } else {
                load_secret(&file)?
                    .generations
                    .iter()
                    .map(|g| (fp(g.key_id()), g.created))
                    .collect()
            };
            if out.json {
                out.json(&serde_json::json!({
                    "file": file, "kind": kind.describe(),
                    "generations": gens.iter().map(|(f, c)| serde_json::json!({"fingerprint": f, "created_unix": c})).collect::<Vec<_>>(),
                }));
            } else {
                outln!("{}: {}", file.display(), kind.describe());
                for (i, (f, c)) in gens.iter().enumerate() {
                    let current = if i + 1 == gens.len() {
                        " (current: new chains use it)"
                    } else {
                        ""
                    };
                    outln!(
                        "  generation {}: fingerprint {f}, created {}{current}",
                        i + 1,
                        bulwark_cli_common::utc(*c)
                    );
                }
            }
        }
        KeyCmd::Passwd { file } => {
            let kf = load_secret(&file)?;
            let new = passphrase("BULWARK_NEW_PASSPHRASE", "New passphrase: ", true)?;
            write_key_file(
                &file,
                &kf.encode(new.as_bytes(), Argon2Params::default())?,
                true,
            )?;
            outln!("changed the passphrase of {}; paper copies of the old file still open with the old passphrase", file.display());
        }
        KeyCmd::Rotate { file, public } => {
            let mut kf = load_secret(&file)?;
            if kf.kind == KeyKind::Restore && public.is_none() {
                bail!("rotating a restore key makes a new public key: give --public FILE for it");
            }
            let pass = passphrase("BULWARK_PASSPHRASE", "Passphrase: ", false)?;
            let new_public = kf.rotate(now())?;
            let bytes = kf.encode(pass.as_bytes(), Argon2Params::default())?;
            if let (Some(pp), Some(pf)) = (&public, &new_public) {
                write_key_file(pp, &pf.encode(), false)?;
            }
            write_key_file(&file, &bytes, true)?;
            outln!(
                "added key generation {} (fingerprint {}) to {}: new chains use it; chains written with older generations stay readable with this file",
                kf.generations.len(),
                fp(kf.current().key_id()),
                file.display()
            );
            if let Some(pp) = &public {
                outln!("give the clients the new public key {}", pp.display());
            }
        }
        KeyCmd::Paper { file } => {
            let b = read_key_bytes(&file)?;
            let kind = bulwark_crypto::kind_of(&b, &file.display().to_string())?;
            outln!(
                "# Bulwark key file {} — {}",
                file.display(),
                kind.describe()
            );
            outln!("# Still protected by its passphrase. Type it back with: bulwark key unpaper --out FILE");
            outln!("# Each line: number, 32 bytes in hex, a check that catches typos.");
            for l in paper_lines(&b) {
                outln!("{l}");
            }
        }
        KeyCmd::Unpaper { out: path } => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().take(512 * 1024), &mut text)
                .context("reading the paper copy from standard input")?;
            let b = unpaper(&text)?;
            let kind = bulwark_crypto::kind_of(&b, "the paper copy")?;
            write_key_file(&path, &b, false)?;
            outln!("rebuilt {} ({})", path.display(), kind.describe());
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paper_copy_reads_back_and_catches_a_typo() {
        let b: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        let text = paper_lines(&b).join("\n");
        assert_eq!(unpaper(&text).unwrap(), b);
        let typo = text.replacen("000", "001", 1);
        assert!(unpaper(&typo).is_err());
    }
}
