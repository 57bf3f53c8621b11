//! Key files (docs/encryption.md, "Key files"): a symmetric key, a write-only client's public
//! key, and the offline restore key that reads what write-only clients wrote. Secret kinds are
//! sealed under a key derived from a passphrase with Argon2id; every file ends with a BLAKE3
//! check, so damage is told apart from a wrong passphrase.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::{Zeroize, Zeroizing};

use crate::{CryptoError, Result};

const MAGIC: [u8; 8] = *b"BULWKEY\0";
const VERSION: u8 = 1;
const HEAD: usize = 56;
const CHECK: usize = 32;
/// Largest payload a reader accepts (64 generations of the largest kind fit easily).
const MAX_PAYLOAD: usize = 8192;
/// Most generations one key file holds (one per rotation).
pub const MAX_GENERATIONS: usize = 64;
/// Length of a key id (the fingerprint).
pub const KEY_ID_LEN: usize = 16;
const KEY_ID_CONTEXT: &str = "bulwark 2026-12 key id";

/// What a key file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A symmetric key: backs up and restores (`bulwark key create`).
    Symmetric,
    /// The private restore key of write-only clients (`bulwark key create --write-only`).
    Restore,
    /// A write-only client's public key: backs up, never reads.
    Public,
}

impl KeyKind {
    fn code(self) -> u8 {
        match self {
            KeyKind::Symmetric => 1,
            KeyKind::Restore => 2,
            KeyKind::Public => 3,
        }
    }
    fn of(code: u8) -> Option<KeyKind> {
        Some(match code {
            1 => KeyKind::Symmetric,
            2 => KeyKind::Restore,
            3 => KeyKind::Public,
            _ => return None,
        })
    }
    /// How the CLI names it.
    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::Symmetric => "a symmetric key file (use it with --key)",
            KeyKind::Restore => "a private restore key (use it with --restore-key)",
            KeyKind::Public => "a write-only public key (use it with --public-key)",
        }
    }
}

/// Argon2id cost parameters, stored in the file so they can be raised later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for Argon2Params {
    /// 32 MiB, 3 passes, 1 lane: above OWASP's minimum, and small enough that a backup
    /// unlocking its key stays under the client's 64 MiB memory budget.
    fn default() -> Self {
        Argon2Params {
            m_kib: 32 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl Argon2Params {
    /// Refuses costs a hostile file could use to exhaust memory or time, and ones too weak.
    fn check(&self) -> std::result::Result<(), String> {
        if !(1..=16).contains(&self.p)
            || !(1..=64).contains(&self.t)
            || self.m_kib < 8 * self.p
            || self.m_kib < 1024
            || self.m_kib > 2 << 20
        {
            return Err(format!(
                "Argon2id parameters m={} KiB t={} p={} are outside 1 MiB..2 GiB, 1..64 passes, 1..16 lanes",
                self.m_kib, self.t, self.p
            ));
        }
        Ok(())
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8; 16]) -> Result<Zeroizing<[u8; 32]>> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| CryptoError::Usage(format!("Argon2id parameters: {e}")))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        a.hash_password_into(passphrase, salt, &mut out[..])
            .map_err(|e| CryptoError::Usage(format!("Argon2id: {e}")))?;
        Ok(out)
    }
}

/// The secret of one key generation.
#[derive(Clone, PartialEq, Eq, Zeroize)]
#[zeroize(drop)]
pub enum Secret {
    /// A symmetric master key: wraps chain data keys; the change-detection key derives from it.
    Symmetric { master: [u8; 32] },
    /// An X25519 private key and the change-detection key shared with its public file.
    X25519 {
        secret: [u8; 32],
        change_key: [u8; 32],
    },
}

/// One generation of a key file; rotation adds one, and new chains use the newest.
#[derive(Clone, PartialEq, Eq)]
pub struct Generation {
    /// When it was made (unix seconds).
    pub created: i64,
    pub secret: Secret,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Generation {{ id: {}, created: {} }}",
            hex::encode(self.key_id()),
            self.created
        )
    }
}

impl Generation {
    /// The key id (fingerprint) recorded in every point this generation encrypts.
    pub fn key_id(&self) -> [u8; KEY_ID_LEN] {
        match &self.secret {
            Secret::Symmetric { master } => key_id_of(master),
            Secret::X25519 { secret, .. } => key_id_of(&public_of(secret)),
        }
    }
    /// The keyed-hash key for change detection.
    pub fn change_key(&self) -> [u8; 32] {
        match &self.secret {
            Secret::Symmetric { master } => crate::block::change_key_of(master),
            Secret::X25519 { change_key, .. } => *change_key,
        }
    }
}

fn key_id_of(material: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let d = blake3::derive_key(KEY_ID_CONTEXT, material);
    d[..KEY_ID_LEN].try_into().expect("16 bytes")
}

pub(crate) fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    let s = x25519_dalek::StaticSecret::from(*secret);
    *x25519_dalek::PublicKey::from(&s).as_bytes()
}

/// A decoded secret key file: a symmetric key or a restore key, with every generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub kind: KeyKind,
    /// Oldest first; the last is current.
    pub generations: Vec<Generation>,
}

/// A write-only client's public key file: what it needs to write, nothing that reads.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKeyFile {
    pub created: i64,
    pub public: [u8; 32],
    pub change_key: [u8; 32],
}

impl std::fmt::Debug for PublicKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKeyFile {{ id: {} }}", hex::encode(self.key_id()))
    }
}

impl PublicKeyFile {
    /// Its key id (equals the restore key generation's).
    pub fn key_id(&self) -> [u8; KEY_ID_LEN] {
        key_id_of(&self.public)
    }

    /// Encodes the file (not passphrase-protected: unattended backups read it).
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(72);
        payload.extend_from_slice(&self.created.to_le_bytes());
        payload.extend_from_slice(&self.public);
        payload.extend_from_slice(&self.change_key);
        frame(KeyKind::Public, None, &payload)
    }

    /// Decodes and checks a public key file; `path` is named in errors.
    pub fn decode(b: &[u8], path: &str) -> Result<PublicKeyFile> {
        let (kind, _, payload) = unframe(b, path)?;
        if kind != KeyKind::Public {
            return Err(CryptoError::WrongKey(format!(
                "{path} is {}, not a write-only public key",
                kind.describe()
            )));
        }
        if payload.len() != 72 {
            return Err(bad(path, "public key payload is not 72 bytes"));
        }
        Ok(PublicKeyFile {
            created: i64::from_le_bytes(payload[..8].try_into().expect("8")),
            public: payload[8..40].try_into().expect("32"),
            change_key: payload[40..72].try_into().expect("32"),
        })
    }
}

fn bad(path: &str, why: &str) -> CryptoError {
    CryptoError::BadKeyFile {
        path: path.to_string(),
        why: why.to_string(),
    }
}

struct Sealing {
    params: Argon2Params,
    salt: [u8; 16],
    nonce: [u8; 12],
}

/// Head, payload (sealed when `seal` is given), check.
fn frame(kind: KeyKind, seal: Option<(&Sealing, &[u8; 32])>, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD + payload.len() + 16 + CHECK);
    b.extend_from_slice(&MAGIC);
    b.push(VERSION);
    b.push(kind.code());
    b.extend_from_slice(&[0, 0]);
    let (p, salt, nonce) = match seal {
        Some((s, _)) => (s.params, s.salt, s.nonce),
        None => (
            Argon2Params {
                m_kib: 0,
                t: 0,
                p: 0,
            },
            [0; 16],
            [0; 12],
        ),
    };
    for v in [p.m_kib, p.t, p.p] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&salt);
    b.extend_from_slice(&nonce);
    let n = payload.len() + if seal.is_some() { 16 } else { 0 };
    b.extend_from_slice(&(n as u32).to_le_bytes());
    debug_assert_eq!(b.len(), HEAD);
    let mut body = payload.to_vec();
    if let Some((s, key)) = seal {
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key[..]).expect("32-byte key"));
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(s.nonce),
            Aad::from(&b[..HEAD]),
            &mut body,
        )
        .expect("sealing a small payload");
    }
    b.extend_from_slice(&body);
    body.zeroize();
    let check = blake3::hash(&b);
    b.extend_from_slice(check.as_bytes());
    b
}

/// Checks magic, version, length and check; returns kind, head and payload bytes.
fn unframe<'a>(b: &'a [u8], path: &str) -> Result<(KeyKind, &'a [u8], &'a [u8])> {
    if b.len() < HEAD + CHECK || b[..8] != MAGIC {
        return Err(bad(
            path,
            "it does not start with a Bulwark key file header",
        ));
    }
    if b[8] != VERSION {
        return Err(bad(
            path,
            &format!("key file version {} is not supported by this build", b[8]),
        ));
    }
    let kind = KeyKind::of(b[9]).ok_or_else(|| bad(path, &format!("unknown key kind {}", b[9])))?;
    if b[10..12] != [0, 0] {
        return Err(bad(path, "reserved bytes are not zero"));
    }
    let n = u32::from_le_bytes(b[52..56].try_into().expect("4")) as usize;
    if n > MAX_PAYLOAD || b.len() != HEAD + n + CHECK {
        return Err(bad(
            path,
            "its length does not match its header (truncated or extended)",
        ));
    }
    if blake3::hash(&b[..HEAD + n]).as_bytes() != &b[HEAD + n..] {
        return Err(bad(path, "its check does not match (the file was damaged)"));
    }
    Ok((kind, &b[..HEAD], &b[HEAD..HEAD + n]))
}

/// The kind of key in an encoded file, without a passphrase (for messages).
pub fn kind_of(b: &[u8], path: &str) -> Result<KeyKind> {
    Ok(unframe(b, path)?.0)
}

impl KeyFile {
    /// A new symmetric key file with one generation.
    pub fn new_symmetric(now: i64) -> Result<KeyFile> {
        Ok(KeyFile {
            kind: KeyKind::Symmetric,
            generations: vec![Generation {
                created: now,
                secret: Secret::Symmetric {
                    master: crate::random32()?,
                },
            }],
        })
    }

    /// A new restore key (private) and its public key file.
    pub fn new_write_only(now: i64) -> Result<(KeyFile, PublicKeyFile)> {
        let g = new_x25519(now)?;
        let public = public_file(&g);
        Ok((
            KeyFile {
                kind: KeyKind::Restore,
                generations: vec![g],
            },
            public,
        ))
    }

    /// The generation new chains use.
    pub fn current(&self) -> &Generation {
        self.generations.last().expect("at least one generation")
    }

    /// The generation with key id `id`.
    pub fn find(&self, id: &[u8; KEY_ID_LEN]) -> Option<&Generation> {
        self.generations.iter().find(|g| &g.key_id() == id)
    }

    /// Adds a generation: new chains use it, old chains stay readable with the older ones.
    /// For a restore key, also returns the new public key file for the clients.
    pub fn rotate(&mut self, now: i64) -> Result<Option<PublicKeyFile>> {
        if self.generations.len() >= MAX_GENERATIONS {
            return Err(CryptoError::Usage(format!(
                "the key file already holds {MAX_GENERATIONS} generations, the most one file holds; create a new key file"
            )));
        }
        let (g, public) = match self.kind {
            KeyKind::Symmetric => (
                Generation {
                    created: now,
                    secret: Secret::Symmetric {
                        master: crate::random32()?,
                    },
                },
                None,
            ),
            _ => {
                let g = new_x25519(now)?;
                let p = public_file(&g);
                (g, Some(p))
            }
        };
        self.generations.push(g);
        Ok(public)
    }

    /// The public key file of the current generation of a restore key.
    pub fn public(&self) -> Option<PublicKeyFile> {
        match self.kind {
            KeyKind::Restore => Some(public_file(self.current())),
            _ => None,
        }
    }

    fn payload(&self) -> Zeroizing<Vec<u8>> {
        let mut p = Zeroizing::new(vec![self.generations.len() as u8]);
        for g in &self.generations {
            p.extend_from_slice(&g.created.to_le_bytes());
            match &g.secret {
                Secret::Symmetric { master } => p.extend_from_slice(master),
                Secret::X25519 { secret, change_key } => {
                    p.extend_from_slice(secret);
                    p.extend_from_slice(change_key);
                }
            }
        }
        p
    }

    /// Encodes the file, sealed under `passphrase` with Argon2id `params`.
    pub fn encode(&self, passphrase: &[u8], params: Argon2Params) -> Result<Vec<u8>> {
        params.check().map_err(CryptoError::Usage)?;
        if passphrase.is_empty() {
            return Err(CryptoError::Usage(
                "an empty passphrase is not allowed: choose one".into(),
            ));
        }
        let s = Sealing {
            params,
            salt: crate::random16()?,
            nonce: crate::random16()?[..12].try_into().expect("12"),
        };
        let key = params.derive(passphrase, &s.salt)?;
        Ok(frame(self.kind, Some((&s, &key)), &self.payload()))
    }

    /// Decodes a secret key file with its passphrase; `path` is named in errors. A wrong
    /// passphrase and a damaged file give different errors.
    pub fn decode(b: &[u8], passphrase: &[u8], path: &str) -> Result<KeyFile> {
        let (kind, head, sealed) = unframe(b, path)?;
        if kind == KeyKind::Public {
            return Err(CryptoError::WrongKey(format!(
                "{path} is a write-only public key: it can back up but never read; restoring needs the private restore key (--restore-key)"
            )));
        }
        let u = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4"));
        let params = Argon2Params {
            m_kib: u(12),
            t: u(16),
            p: u(20),
        };
        params.check().map_err(|why| bad(path, &why))?;
        let salt: [u8; 16] = head[24..40].try_into().expect("16");
        let nonce: [u8; 12] = head[40..52].try_into().expect("12");
        if sealed.len() < 16 {
            return Err(bad(path, "sealed payload too short"));
        }
        let key = params.derive(passphrase, &salt)?;
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key[..]).expect("32-byte key"));
        let mut body = Zeroizing::new(sealed.to_vec());
        let plain = k
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(head),
                &mut body,
            )
            .map_err(|_| CryptoError::WrongPassphrase {
                path: path.to_string(),
            })?;
        let per = match kind {
            KeyKind::Symmetric => 8 + 32,
            _ => 8 + 64,
        };
        let count = *plain.first().ok_or_else(|| bad(path, "empty payload"))? as usize;
        if count == 0 || count > MAX_GENERATIONS || plain.len() != 1 + count * per {
            return Err(bad(path, "generation count does not match the payload"));
        }
        let generations = plain[1..]
            .chunks_exact(per)
            .map(|c| {
                let created = i64::from_le_bytes(c[..8].try_into().expect("8"));
                let k32 = |at: usize| -> [u8; 32] { c[at..at + 32].try_into().expect("32") };
                let secret = match kind {
                    KeyKind::Symmetric => Secret::Symmetric { master: k32(8) },
                    _ => Secret::X25519 {
                        secret: k32(8),
                        change_key: k32(40),
                    },
                };
                Generation { created, secret }
            })
            .collect();
        Ok(KeyFile { kind, generations })
    }
}

fn new_x25519(now: i64) -> Result<Generation> {
    Ok(Generation {
        created: now,
        secret: Secret::X25519 {
            secret: crate::random32()?,
            change_key: crate::random32()?,
        },
    })
}

fn public_file(g: &Generation) -> PublicKeyFile {
    match &g.secret {
        Secret::X25519 { secret, change_key } => PublicKeyFile {
            created: g.created,
            public: public_of(secret),
            change_key: *change_key,
        },
        Secret::Symmetric { .. } => unreachable!("only restore keys have public files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Argon2Params {
        Argon2Params {
            m_kib: 1024,
            t: 1,
            p: 1,
        }
    }

    #[test]
    fn key_files_round_trip_and_tell_a_wrong_passphrase_from_damage() {
        let mut k = KeyFile::new_symmetric(1).unwrap();
        k.rotate(2).unwrap();
        let b = k.encode(b"correct horse", fast()).unwrap();
        assert_eq!(KeyFile::decode(&b, b"correct horse", "k").unwrap(), k);
        let e = KeyFile::decode(&b, b"wrong", "k").unwrap_err();
        assert!(matches!(e, CryptoError::WrongPassphrase { .. }), "{e}");
        assert!(e.to_string().contains("wrong passphrase"));
        let mut d = b.clone();
        d[HEAD + 3] ^= 1;
        let e = KeyFile::decode(&d, b"correct horse", "k").unwrap_err();
        assert!(matches!(e, CryptoError::BadKeyFile { .. }), "{e}");
    }

    #[test]
    fn a_restore_key_and_its_public_file_share_id_and_change_key() {
        let (k, p) = KeyFile::new_write_only(5).unwrap();
        assert_eq!(k.current().key_id(), p.key_id());
        assert_eq!(k.current().change_key(), p.change_key);
        let pb = p.encode();
        assert_eq!(PublicKeyFile::decode(&pb, "p").unwrap(), p);
        let e = KeyFile::decode(&pb, b"x", "p").unwrap_err().to_string();
        assert!(e.contains("never read"), "{e}");
    }
}
