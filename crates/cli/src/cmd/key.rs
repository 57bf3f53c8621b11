//! `bulwark key`: create, show, change the passphrase of, rotate and copy to paper the keys of
//! encrypted backups (docs/encryption.md). Also loads the keys `backup`, `restore` and job
//! files name.

use std::io::Read as _;
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
        /// Where to write the public key (only with --write-only).
        #[arg(long, requires = "write_only")]
        public: Option<PathBuf>,
    },
    /// Show what a key file is and the fingerprints of its key generations (secret files ask
    /// for the passphrase).
    Show { file: PathBuf },
    /// Change the passphrase of a key file: the old from $BULWARK_PASSPHRASE or the terminal,
    /// the new from $BULWARK_NEW_PASSPHRASE or the terminal.
    Passwd { file: PathBuf },
    /// Add a new key generation: new chains use it, old chains stay readable with the older
    /// ones, which the file keeps. For a restore key, also writes the new public key. The
    /// passphrase is asked once and stays the same (`key passwd` changes it).
    Rotate {
        file: PathBuf,
        /// Where to write the new public key (restore keys only).
        #[arg(long)]
        public: Option<PathBuf>,
    },
    /// Print a paper copy of a key file (a secret one stays protected by its passphrase);
    /// `key unpaper` turns it back into the file.
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

/// A passphrase from `var` or, when it is unset, the terminal (`confirm`: asked twice). An
/// empty one is refused here, naming where it came from (no key file has one).
fn passphrase(
    var: &str,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if let Ok(p) = std::env::var(var) {
        if p.is_empty() {
            bail!(
                "{var} is set but empty: an empty passphrase is not allowed; set {var} to the \
                 passphrase, or unset it to type it on the terminal"
            );
        }
        return Ok(zeroize::Zeroizing::new(p));
    }
    let p = zeroize::Zeroizing::new(
        rpassword::prompt_password(prompt)
            .with_context(|| format!("reading the passphrase from the terminal (or set {var})"))?,
    );
    if p.is_empty() {
        bail!("an empty passphrase is not allowed: type one (or set {var})");
    }
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

/// Refuses a key file whose mode lets other users read a secret (they could copy it and try
/// passphrases offline) or replace a public key (they could swap in their own and read every
/// later backup). docs/encryption.md, "Key file permissions".
fn check_mode(shown: &str, mode: u32, kind: KeyKind) -> anyhow::Result<()> {
    let mode = mode & 0o7777;
    if kind == KeyKind::Public && mode & 0o022 != 0 {
        bail!(
            "public key file {shown} (mode {mode:04o}) is writable by other users: another user \
             could swap in their own key and read every later backup; refused. Run `chmod 600 \
             {shown}`, then check with `bulwark key show {shown}` that its fingerprint is still \
             your restore key's"
        );
    }
    if kind != KeyKind::Public && mode & 0o077 != 0 {
        bail!(
            "secret key file {shown} (mode {mode:04o}) is readable or writable by other users: \
             they could copy it and try passphrases offline; refused. Run `chmod 600 {shown}` \
             (a copy on a filesystem without Unix modes, such as a FAT stick: `install -m 600 \
             {shown} DEST` first)"
        );
    }
    Ok(())
}

/// A key file read from disk (at most 64 KiB), its kind known and its mode checked.
struct KeyBytes {
    bytes: Vec<u8>,
    kind: KeyKind,
    shown: String,
}

/// Reads the key file `path`: size, kind and mode are checked on the one opened file.
fn read_key_file(path: &Path) -> anyhow::Result<KeyBytes> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let ctx = || format!("reading key file {shown}");
    let f = std::fs::File::open(path).with_context(ctx)?;
    let meta = f.metadata().with_context(ctx)?;
    if meta.len() > 64 * 1024 {
        bail!("{shown} is {} bytes: not a Bulwark key file", meta.len());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(64 * 1024)
        .read_to_end(&mut bytes)
        .with_context(ctx)?;
    let kind = bulwark_crypto::kind_of(&bytes, &shown)?;
    check_mode(&shown, meta.permissions().mode(), kind)?;
    Ok(KeyBytes { bytes, kind, shown })
}

/// What a secret key file is opened for; a key of another kind is refused before the
/// passphrase is asked, saying what to use instead.
#[derive(Clone, Copy)]
enum Purpose {
    /// `backup --key`: a symmetric key.
    Backup,
    /// Restore, export, mount: the kind of the option given.
    Read(KeyKind),
    /// `key show`, `key passwd`, `key rotate`: either secret kind.
    Manage,
}

/// Why `purpose` cannot use a key file of `kind` (completes "FILE is …"); `None` if it can.
fn refusal(purpose: Purpose, kind: KeyKind) -> Option<String> {
    let public = kind == KeyKind::Public;
    match purpose {
        Purpose::Backup if public => Some(
            "a write-only public key: give it as --public-key (public_key in a job file); \
             --key takes a symmetric key file"
                .into(),
        ),
        Purpose::Backup if kind == KeyKind::Restore => Some(format!(
            "{}: backups of write-only clients take the public key (--public-key)",
            kind.describe()
        )),
        Purpose::Read(_) if public => Some(
            "a write-only public key: it can back up but never read; restoring needs the \
             private restore key (--restore-key)"
                .into(),
        ),
        Purpose::Read(want) if kind != want => Some(kind.describe().into()),
        Purpose::Manage if public => Some(
            "a write-only public key: it has no passphrase, and a key pair is rotated through \
             its private restore key: `bulwark key rotate PRIVATE --public NEW.pub` (which \
             writes the new public key for the clients)"
                .into(),
        ),
        _ => None,
    }
}

impl KeyBytes {
    /// Opens the secret key with its passphrase (asked once), which is returned too so the
    /// file can be sealed again under the same one.
    fn unlock(&self, purpose: Purpose) -> anyhow::Result<(KeyFile, zeroize::Zeroizing<String>)> {
        if let Some(why) = refusal(purpose, self.kind) {
            bail!("{} is {why}", self.shown);
        }
        let p = passphrase(
            "BULWARK_PASSPHRASE",
            &format!("Passphrase for {}: ", self.shown),
            false,
        )?;
        let kf = KeyFile::decode(&self.bytes, p.as_bytes(), &self.shown)?;
        Ok((kf, p))
    }
}

/// Opens a write-only client's public key file.
pub fn load_public(path: &Path) -> anyhow::Result<PublicKeyFile> {
    let k = read_key_file(path)?;
    Ok(PublicKeyFile::decode(&k.bytes, &k.shown)?)
}

/// The key a backup writes with, from `--key` or `--public-key` (at most one).
pub fn write_key(key: Option<&Path>, public: Option<&Path>) -> anyhow::Result<Option<WriteKey>> {
    Ok(match (key, public) {
        (Some(_), Some(_)) => bail!("give --key or --public-key, not both"),
        (Some(k), None) => Some(WriteKey::Symmetric(
            read_key_file(k)?.unlock(Purpose::Backup)?.0,
        )),
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
    Ok(Some(read_key_file(path)?.unlock(Purpose::Read(want))?.0))
}

/// The folder a key file at `path` goes into.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Refuses a new key file at `path` (given as `opt`) unless its folder exists and nothing is
/// there yet; checked for every file a command writes before it writes any.
fn check_new_target(path: &Path, opt: &str) -> anyhow::Result<()> {
    if path.symlink_metadata().is_ok() {
        bail!(
            "{} ({opt}) exists; a key file is never overwritten (choose another name); nothing \
             was written",
            path.display()
        );
    }
    let dir = folder_of(path);
    if !dir.is_dir() {
        bail!(
            "the folder {} of {} ({opt}) does not exist: create it first; nothing was written",
            dir.display(),
            path.display()
        );
    }
    Ok(())
}

/// Refuses two names for one file (`--out` and `--public` of one command), existing or not.
fn check_distinct(a: &Path, b: &Path) -> anyhow::Result<()> {
    let real = |p: &Path| {
        std::fs::canonicalize(folder_of(p))
            .map(|d| d.join(p.file_name().unwrap_or_default()))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    if real(a) == real(b) {
        bail!(
            "{} and {} name the same file: the private and the public key need two files; \
             nothing was written",
            a.display(),
            b.display()
        );
    }
    Ok(())
}

/// Writes the new key file `first`, then `second` (replacing it when `replace`); when the
/// second fails, the first is removed again, so no half of a key pair stays behind.
fn write_pair(first: (&Path, &[u8]), second: (&Path, &[u8]), replace: bool) -> anyhow::Result<()> {
    write_key_file(first.0, first.1, false)
        .with_context(|| format!("writing {} failed: nothing was written", first.0.display()))?;
    if let Err(e) = write_key_file(second.0, second.1, replace) {
        let undo = match std::fs::remove_file(first.0) {
            Ok(()) => format!(
                "so {} was removed again: nothing was written",
                first.0.display()
            ),
            Err(r) => format!(
                "and {} could not be removed again ({r}): delete it",
                first.0.display()
            ),
        };
        return Err(e.context(format!("writing {} failed, {undo}", second.0.display())));
    }
    Ok(())
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
    Ok(bulwark_repository::write_atomic_mode(path, data, 0o600)?)
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
        // Hex is hex in either case: an uppercase check is not a typo.
        if !h.finalize().to_hex()[..4].eq_ignore_ascii_case(check) {
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
            // Every target is checked before the passphrase is asked and anything written.
            check_new_target(&path, "--out")?;
            if let Some(pp) = &public {
                check_new_target(pp, "--public")?;
                check_distinct(&path, pp)?;
            }
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
            match (&public, &public_file) {
                (Some(pp), Some(pf)) => write_pair((&path, &bytes), (pp, &pf.encode()), false)?,
                _ => write_key_file(&path, &bytes, false)?,
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
            let k = read_key_file(&file)?;
            let gens: Vec<(String, i64)> = if k.kind == KeyKind::Public {
                let p = PublicKeyFile::decode(&k.bytes, &k.shown)?;
                vec![(fp(p.key_id()), p.created)]
            } else {
                k.unlock(Purpose::Manage)?
                    .0
                    .generations
                    .iter()
                    .map(|g| (fp(g.key_id()), g.created))
                    .collect()
            };
            if out.json {
                out.json(&serde_json::json!({
                    "file": file, "kind": k.kind.describe(),
                    "generations": gens.iter().map(|(f, c)| serde_json::json!({"fingerprint": f, "created_unix": c})).collect::<Vec<_>>(),
                }));
            } else {
                outln!("{}: {}", file.display(), k.kind.describe());
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
            let (kf, _old) = read_key_file(&file)?.unlock(Purpose::Manage)?;
            let new = passphrase("BULWARK_NEW_PASSPHRASE", "New passphrase: ", true)?;
            write_key_file(
                &file,
                &kf.encode(new.as_bytes(), Argon2Params::default())?,
                true,
            )?;
            outln!("changed the passphrase of {}; paper copies of the old file still open with the old passphrase", file.display());
        }
        KeyCmd::Rotate { file, public } => {
            let k = read_key_file(&file)?;
            match (k.kind, &public) {
                // Refused by `unlock`, saying what to rotate instead.
                (KeyKind::Public, _) => {}
                (KeyKind::Restore, None) => bail!(
                    "rotating a restore key makes a new public key: give --public FILE for it"
                ),
                (KeyKind::Symmetric, Some(_)) => bail!(
                    "{} is {}, which has no public key: rotate it without --public",
                    k.shown,
                    k.kind.describe()
                ),
                (_, Some(pp)) => {
                    check_new_target(pp, "--public")?;
                    check_distinct(&file, pp)?;
                }
                _ => {}
            }
            // Rotation only adds a generation: the file is sealed again under the passphrase
            // that opened it (asked once; `key passwd` changes it).
            let (mut kf, pass) = k.unlock(Purpose::Manage)?;
            let new_public = kf.rotate(now())?;
            let bytes = kf.encode(pass.as_bytes(), Argon2Params::default())?;
            match (&public, &new_public) {
                (Some(pp), Some(pf)) => write_pair((pp, &pf.encode()), (&file, &bytes), true)?,
                _ => write_key_file(&file, &bytes, true)?,
            }
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
            let k = read_key_file(&file)?;
            outln!(
                "# Bulwark key file {} — {}",
                file.display(),
                k.kind.describe()
            );
            if k.kind == KeyKind::Public {
                outln!("# A public key: no passphrase and nothing secret (it backs up, never reads); keep other users from swapping it. Type it back with: bulwark key unpaper --out FILE");
            } else {
                outln!("# Still protected by its passphrase. Type it back with: bulwark key unpaper --out FILE");
            }
            outln!("# Each line: number, 32 bytes in hex, a check that catches typos.");
            for l in paper_lines(&k.bytes) {
                outln!("{l}");
            }
        }
        KeyCmd::Unpaper { out: path } => {
            // Before the lines are typed in.
            check_new_target(&path, "--out")?;
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

    #[test]
    fn a_paper_copy_typed_in_uppercase_reads_back() {
        let b: Vec<u8> = (0..100u32).map(|i| (i * 13) as u8).collect();
        let text = paper_lines(&b).join("\n");
        assert!(text.chars().any(|c| c.is_ascii_lowercase()), "{text}");
        assert_eq!(unpaper(&text.to_uppercase()).unwrap(), b);
    }

    #[test]
    fn secret_key_files_must_be_private_and_public_ones_unwritable_by_others() {
        use KeyKind::*;
        for (mode, kind, refused) in [
            (0o600, Symmetric, false),
            (0o400, Restore, false),
            (0o100600, Symmetric, false),
            (0o640, Symmetric, true),
            (0o604, Restore, true),
            (0o620, Restore, true),
            (0o644, Public, false),
            (0o600, Public, false),
            (0o664, Public, true),
            (0o646, Public, true),
        ] {
            let r = check_mode("k", mode, kind);
            assert_eq!(r.is_err(), refused, "{mode:o} {kind:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("chmod 600 k"), "{e}");
            }
        }
    }

    #[test]
    fn a_key_of_the_wrong_kind_is_refused_saying_what_to_use() {
        use KeyKind::*;
        let says = |p, k| refusal(p, k).unwrap_or_default();
        assert!(says(Purpose::Backup, Public).contains("--public-key"));
        assert!(!says(Purpose::Backup, Public).contains("--restore-key"));
        assert!(says(Purpose::Backup, Restore).contains("--public-key"));
        assert!(says(Purpose::Read(Restore), Public).contains("never read"));
        assert!(says(Purpose::Read(Symmetric), Restore).contains("--restore-key"));
        let manage = says(Purpose::Manage, Public);
        assert!(
            manage.contains("no passphrase") && manage.contains("--public"),
            "{manage}"
        );
        for (p, k) in [
            (Purpose::Backup, Symmetric),
            (Purpose::Read(Symmetric), Symmetric),
            (Purpose::Read(Restore), Restore),
            (Purpose::Manage, Symmetric),
            (Purpose::Manage, Restore),
        ] {
            assert_eq!(refusal(p, k), None, "{k:?}");
        }
    }
}
