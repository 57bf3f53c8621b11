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
    /// up but never read. The passphrase is read from $BULWARK_PASSPHRASE, the file
    /// $BULWARK_PASSPHRASE_FILE or the systemd credential bulwark-passphrase, or asked on the
    /// terminal.
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
    /// Change the passphrase of a key file: the old as for every key file ($BULWARK_PASSPHRASE,
    /// $BULWARK_PASSPHRASE_FILE, the credential, the terminal), the new from
    /// $BULWARK_NEW_PASSPHRASE, $BULWARK_NEW_PASSPHRASE_FILE or the terminal. Given a link,
    /// writes the file it leads to.
    Passwd { file: PathBuf },
    /// Add a new key generation: chains begun by an active full use it (synthetic fulls carry
    /// their chain's key on), old chains stay readable with the older ones, which the file
    /// keeps. For a restore key, also writes the new public key. The passphrase is asked once
    /// and stays the same (`key passwd` changes it).
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

/// Where a passphrase comes from, first found wins: the variable `var`, then the file that
/// `{var}_FILE` names, then (for the key passphrase) the systemd credential `credential` in
/// `$CREDENTIALS_DIRECTORY`, then the terminal. docs/encryption.md, "Passphrases".
struct PassSource {
    var: &'static str,
    credential: Option<&'static str>,
}

/// The passphrase that opens a key file (and seals a new one).
const KEY_PASS: PassSource = PassSource {
    var: "BULWARK_PASSPHRASE",
    credential: Some("bulwark-passphrase"),
};

/// The new passphrase of `key passwd`.
const NEW_PASS: PassSource = PassSource {
    var: "BULWARK_NEW_PASSPHRASE",
    credential: None,
};

/// The longest passphrase file read (a passphrase, not a document).
const PASS_FILE_MAX: u64 = 4096;

impl PassSource {
    fn file_var(&self) -> String {
        format!("{}_FILE", self.var)
    }

    /// Every way to give this passphrase, for the message when none was given.
    fn ways(&self) -> String {
        let mut w = format!(
            "{var}=PASSPHRASE; {var}_FILE=PATH, a file of mode 0600 holding it (one trailing \
             newline is ignored); ",
            var = self.var
        );
        if let Some(c) = self.credential {
            w.push_str(&format!(
                "the systemd credential {c} (LoadCredential={c}:/etc/bulwark/keys/passphrase or \
                 LoadCredentialEncrypted= in the unit, see docs/jobs.md \"Encrypted jobs\"); "
            ));
        }
        w.push_str("or run it on a terminal");
        if self.credential.is_some() {
            w.push_str(
                ". A scheduled backup needs no passphrase at all as a write-only client \
                 (public_key in the job file, docs/encryption.md)",
            );
        }
        w
    }
}

/// A passphrase from `src` (`confirm`: asked twice on the terminal). An empty one is refused
/// here, naming where it came from (no key file has one).
fn passphrase(
    src: &PassSource,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let var = src.var;
    match std::env::var(var) {
        Ok(p) if p.is_empty() => bail!(
            "{var} is set but empty: an empty passphrase is not allowed; set {var} to the \
             passphrase, or unset it to use {var}_FILE or the terminal"
        ),
        Ok(p) => return Ok(zeroize::Zeroizing::new(p)),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("{var} is not valid UTF-8: a passphrase is text; set it again")
        }
        Err(std::env::VarError::NotPresent) => {}
    }
    let file_var = src.file_var();
    if let Some(f) = std::env::var_os(&file_var) {
        if f.is_empty() {
            bail!(
                "{file_var} is set but empty: set it to the file that holds the passphrase, or \
                 unset it"
            );
        }
        let path = PathBuf::from(f);
        let shown = format!("{} ({file_var})", path.display());
        return read_passphrase_file(&path, &shown, false);
    }
    let mut not_there = String::new();
    if let (Some(name), Some(dir)) = (src.credential, std::env::var_os("CREDENTIALS_DIRECTORY")) {
        let path = Path::new(&dir).join(name);
        if path.symlink_metadata().is_ok() {
            let shown = format!("{} (the systemd credential)", path.display());
            return read_passphrase_file(&path, &shown, true);
        }
        not_there = format!(
            " ($CREDENTIALS_DIRECTORY {} holds no credential {name})",
            path.parent().unwrap_or(Path::new("")).display()
        );
    }
    let no_source = |e: std::io::Error| {
        anyhow::anyhow!(
            "no passphrase given: {var} and {file_var} are not set{not_there}, and reading it \
             from the terminal failed ({e}). Give it one of these ways (the first one set is \
             used): {}",
            src.ways()
        )
    };
    let p = zeroize::Zeroizing::new(rpassword::prompt_password(prompt).map_err(no_source)?);
    if p.is_empty() {
        bail!("an empty passphrase is not allowed: type one (or set {var} or {file_var})");
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

/// Reads a passphrase file (`credential`: systemd's, which it writes 0400, root's or the
/// service user's, in a folder private to the unit; with a user's ACL the group bits show
/// read). At most [`PASS_FILE_MAX`] bytes of UTF-8, one trailing newline dropped.
fn read_passphrase_file(
    path: &Path,
    shown: &str,
    credential: bool,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (f, meta) = open_regular(path, shown, "passphrase file")?;
    check_owner(
        &format!("passphrase file {shown}"),
        &path.display().to_string(),
        meta.uid(),
        bulwark_sys::effective_uid(),
        "another user could read or change the passphrase",
    )?;
    let mode = meta.permissions().mode() & 0o7777;
    let others = if credential { 0o007 } else { 0o077 };
    if mode & others != 0 {
        bail!(
            "passphrase file {shown} has mode {mode:04o}: other users could read or change \
             the passphrase; refused. Run `chmod 600 {}`",
            path.display()
        );
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    f.take(PASS_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the passphrase from {shown}"))?;
    if bytes.len() as u64 > PASS_FILE_MAX {
        bail!(
            "passphrase file {shown} is longer than {PASS_FILE_MAX} bytes: it should hold only \
             the passphrase (one line)"
        );
    }
    let mut p =
        zeroize::Zeroizing::new(String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
            let mut b = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut b);
            anyhow::anyhow!("passphrase file {shown} is not UTF-8 text: a passphrase is text")
        })?);
    strip_one_newline(&mut p);
    if p.is_empty() {
        bail!(
            "passphrase file {shown} is empty: an empty passphrase is not allowed; write the \
             passphrase into it"
        );
    }
    Ok(p)
}

/// Drops one trailing `\n` (or `\r\n`), as `echo` and editors leave it; nothing else.
fn strip_one_newline(p: &mut String) {
    if p.ends_with("\r\n") {
        p.truncate(p.len() - 2);
    } else if p.ends_with('\n') {
        p.truncate(p.len() - 1);
    }
}

/// Opens `path` (following links) for reading without blocking, so a FIFO or a device is
/// refused at once instead of waiting for a writer; the opened file must be a regular file.
fn open_regular(
    path: &Path,
    shown: &str,
    what: &str,
) -> anyhow::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let ctx = || format!("reading {what} {shown}");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(bulwark_sys::open::NONBLOCK | bulwark_sys::open::NOCTTY)
        .open(path)
        .with_context(ctx)?;
    let meta = f.metadata().with_context(ctx)?;
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok((f, meta));
    } else if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    bail!("{what} {shown} is {kind}, not a regular file: give the file itself; refused")
}

/// Refuses the file `path` (named `label` in the message) unless the running user `me` or
/// root owns it: its owner could replace it at will.
fn check_owner(label: &str, path: &str, owner: u32, me: u32, why: &str) -> anyhow::Result<()> {
    if owner == me || owner == 0 {
        return Ok(());
    }
    let allowed = allowed_owners(me);
    bail!(
        "{label} is owned by uid {owner}, not by {allowed}: {why}; refused. Run \
         `chown {me} {path}` as root, or copy it into a folder of yours: `install -m 600 \
         {path} DEST`"
    )
}

/// Who may own a key file and its folder, as messages say it.
fn allowed_owners(me: u32) -> String {
    if me == 0 {
        "root (you)".into()
    } else {
        format!("you (uid {me}) or root")
    }
}

/// Refuses a key file in the folder `dir` (mode `mode`, owner `owner`) when another user
/// could replace the file there: the folder is another user's, or every user may write it
/// and it has no sticky bit. docs/encryption.md, "Key file permissions".
fn check_folder(dir: &str, file: &str, mode: u32, owner: u32, me: u32) -> anyhow::Result<()> {
    let mode = mode & 0o7777;
    if owner != me && owner != 0 {
        let allowed = allowed_owners(me);
        bail!(
            "the folder {dir} of key file {file} is owned by uid {owner}, not by {allowed}: \
             that user could replace the key file (and swap in their own key); \
             refused. Move the key into a folder of yours or root's (e.g. /etc/bulwark/keys), \
             or run `chown {me} {dir}` as root"
        );
    }
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        bail!(
            "the folder {dir} of key file {file} (mode {mode:04o}) is writable by every user \
             and has no sticky bit: anyone could replace the key file (and swap in their own \
             key); refused. Run `chmod o-w {dir}` (or `chmod +t {dir}`), or move the key into a \
             private folder"
        );
    }
    Ok(())
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

/// A key file read from disk (at most 64 KiB), its kind known, its mode, owner and folder
/// checked.
struct KeyBytes {
    bytes: Vec<u8>,
    kind: KeyKind,
    shown: String,
    /// The file itself, links resolved: `passwd` and `rotate` write this one, so a link to a
    /// key file stays a link.
    real: PathBuf,
}

/// Reads the key file `path`: type, owner, size, kind and mode are checked on the one opened
/// file, then the folders of the name given and of the file a link leads to.
fn read_key_file(path: &Path) -> anyhow::Result<KeyBytes> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let shown = path.display().to_string();
    let ctx = || format!("reading key file {shown}");
    let (f, meta) = open_regular(path, &shown, "key file")?;
    let me = bulwark_sys::effective_uid();
    check_owner(
        &format!("key file {shown}"),
        &shown,
        meta.uid(),
        me,
        "that user could swap in their own key (and read every later backup) or copy a secret \
         one",
    )?;
    if meta.len() > 64 * 1024 {
        bail!("{shown} is {} bytes: not a Bulwark key file", meta.len());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(64 * 1024)
        .read_to_end(&mut bytes)
        .with_context(ctx)?;
    let kind = bulwark_crypto::kind_of(&bytes, &shown)?;
    check_mode(&shown, meta.permissions().mode(), kind)?;
    let real = std::fs::canonicalize(path).with_context(ctx)?;
    let mut folders = vec![folder_of(path).to_path_buf()];
    if folder_of(&real) != folder_of(path) {
        folders.push(folder_of(&real).to_path_buf());
    }
    for dir in folders {
        let m = std::fs::metadata(&dir)
            .with_context(|| format!("reading the folder {} of key file {shown}", dir.display()))?;
        check_folder(
            &dir.display().to_string(),
            &shown,
            m.permissions().mode(),
            m.uid(),
            me,
        )?;
    }
    Ok(KeyBytes {
        bytes,
        kind,
        shown,
        real,
    })
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
            &KEY_PASS,
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

/// " (the link's file REAL)" when `given` is a symbolic link, for the messages of the
/// commands that write a key file in place.
fn via_link(given: &Path, real: &Path) -> String {
    if given.is_symlink() {
        format!(" (the file the link leads to, {})", real.display())
    } else {
        String::new()
    }
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
            let pass = passphrase(&KEY_PASS, "New passphrase for the key file: ", true)?;
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
            let k = read_key_file(&file)?;
            let (kf, _old) = k.unlock(Purpose::Manage)?;
            let new = passphrase(&NEW_PASS, "New passphrase: ", true)?;
            // Through a link, the file it leads to is written (in its own folder): the link
            // stays and every name of the key opens with the new passphrase.
            write_key_file(
                &k.real,
                &kf.encode(new.as_bytes(), Argon2Params::default())?,
                true,
            )?;
            outln!(
                "changed the passphrase of {}{}; paper copies of the old file still open with the old passphrase",
                file.display(),
                via_link(&file, &k.real)
            );
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
                    check_distinct(&k.real, pp)?;
                }
                _ => {}
            }
            // Rotation only adds a generation: the file is sealed again under the passphrase
            // that opened it (asked once; `key passwd` changes it).
            let (mut kf, pass) = k.unlock(Purpose::Manage)?;
            let new_public = kf.rotate(now())?;
            let bytes = kf.encode(pass.as_bytes(), Argon2Params::default())?;
            match (&public, &new_public) {
                (Some(pp), Some(pf)) => write_pair((pp, &pf.encode()), (&k.real, &bytes), true)?,
                _ => write_key_file(&k.real, &bytes, true)?,
            }
            outln!(
                "added key generation {} (fingerprint {}) to {}{}: each job's next active full begins a chain under it (incrementals and synthetic fulls carry their chain's key on); chains written with older generations stay readable with this file",
                kf.generations.len(),
                fp(kf.current().key_id()),
                file.display(),
                via_link(&file, &k.real)
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
    fn a_passphrase_file_loses_one_trailing_newline_only() {
        for (text, want) in [
            ("pw\n", "pw"),
            ("pw", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            (" pw \n", " pw "),
            ("\n", ""),
        ] {
            let mut p = text.to_string();
            strip_one_newline(&mut p);
            assert_eq!(p, want, "{text:?}");
        }
    }

    #[test]
    fn key_files_and_their_folders_belong_to_the_user_or_root() {
        assert!(check_owner("k", "k", 1000, 1000, "").is_ok());
        assert!(check_owner("k", "k", 0, 1000, "").is_ok());
        let e = check_owner("k", "k", 65534, 1000, "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chown 1000 k"), "{e}");
        assert!(check_owner("k", "k", 1000, 0, "").is_err());
        for (mode, owner, refused) in [
            (0o700, 1000, false),
            (0o755, 0, false),
            (0o775, 1000, false),
            (0o1777, 0, false),
            (0o40777, 1000, true),
            (0o777, 0, true),
            (0o757, 1000, true),
            (0o755, 65534, true),
            (0o1777, 65534, true),
        ] {
            let r = check_folder("d", "d/k", mode, owner, 1000);
            assert_eq!(r.is_err(), refused, "{mode:o} {owner}");
        }
        let e = check_folder("d", "d/k", 0o777, 0, 1000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod o-w d"), "{e}");
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
