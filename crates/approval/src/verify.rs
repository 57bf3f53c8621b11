//! Approvers and the k-of-n check. The signatures are OpenSSH's SSHSIG format, made with
//! `ssh-keygen -Y sign -f KEY -n bulwark-approval STATEMENT`; they are checked by the
//! `ssh-key` crate (RustCrypto's Ed25519), never by code of ours.

use ssh_key::{Algorithm, PublicKey, SshSig};

/// The SSHSIG namespace of approvals (`ssh-keygen -n`): a signature made for anything else
/// (git commits, files, another program) is not an approval.
pub const NAMESPACE: &str = "bulwark-approval";
/// Largest signature file accepted (an Ed25519 SSHSIG is about 300 bytes).
pub const MAX_SIGNATURE: usize = 1024;
/// Most approvers a configuration may name, and most signatures one request may carry.
pub const MAX_APPROVERS: usize = 16;
/// Lowest threshold: one person alone is what four-eyes protection is against.
pub const MIN_THRESHOLD: u32 = 2;

/// Why approvers or signatures were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("approver {index}: {msg}")]
    BadApprover { index: usize, msg: String },
    #[error("threshold {threshold} is not possible with {approvers} approvers: it must be at least {MIN_THRESHOLD} and at most the number of approvers")]
    BadThreshold { threshold: u32, approvers: usize },
    #[error("signature {index}: {msg}")]
    BadSignature { index: usize, msg: String },
    #[error("only {valid} valid signatures from different approvers ({names}), {threshold} needed; collect more with `ssh-keygen -Y sign -f KEY -n {NAMESPACE} STATEMENT`")]
    TooFew {
        valid: usize,
        threshold: u32,
        names: String,
    },
}

/// One approver: a name (the key's comment) and an Ed25519 public key.
#[derive(Debug, Clone)]
pub struct Approver {
    pub name: String,
    key: PublicKey,
}

impl Approver {
    /// The key's SHA-256 fingerprint as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
    }
}

/// The configured approvers and how many of them must sign.
#[derive(Debug, Clone)]
pub struct Approvers {
    pub list: Vec<Approver>,
    pub threshold: u32,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

impl Approvers {
    /// Parses `ssh-ed25519 AAAA… NAME` lines; names and keys must be unique.
    pub fn parse(lines: &[String], threshold: u32) -> Result<Approvers, ApprovalError> {
        if lines.len() > MAX_APPROVERS {
            return Err(ApprovalError::BadApprover {
                index: MAX_APPROVERS + 1,
                msg: format!("at most {MAX_APPROVERS} approvers"),
            });
        }
        let mut list: Vec<Approver> = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let index = i + 1;
            let bad = |msg: String| ApprovalError::BadApprover { index, msg };
            let key = PublicKey::from_openssh(l.trim()).map_err(|e| {
                bad(format!(
                    "not an OpenSSH public key line ({e}); paste the line of KEY.pub"
                ))
            })?;
            if key.algorithm() != Algorithm::Ed25519 {
                return Err(bad(format!(
                    "is {}, only ssh-ed25519 keys are accepted (ssh-keygen -t ed25519)",
                    key.algorithm()
                )));
            }
            let name = key.comment().to_string();
            if !valid_name(&name) {
                return Err(bad(format!(
                    "needs a name after the key (letters, digits, . _ - @, at most 64), found {name:?}"
                )));
            }
            if list.iter().any(|a| a.name == name) {
                return Err(bad(format!("the name {name:?} is given twice")));
            }
            if list.iter().any(|a| a.key.key_data() == key.key_data()) {
                return Err(bad(format!(
                    "the key of {name:?} is already listed under another name"
                )));
            }
            list.push(Approver { name, key });
        }
        if threshold < MIN_THRESHOLD || threshold as usize > list.len() {
            return Err(ApprovalError::BadThreshold {
                threshold,
                approvers: list.len(),
            });
        }
        Ok(Approvers { list, threshold })
    }

    /// Checks `signatures` (armored SSHSIG texts) over exactly `statement`. Every one must
    /// be a valid signature by a listed approver in namespace [`NAMESPACE`]; at least
    /// `threshold` different approvers must have signed. Returns their names.
    pub fn check(
        &self,
        statement: &[u8],
        signatures: &[&[u8]],
    ) -> Result<Vec<String>, ApprovalError> {
        if signatures.len() > MAX_APPROVERS {
            return Err(ApprovalError::BadSignature {
                index: MAX_APPROVERS + 1,
                msg: format!("at most {MAX_APPROVERS} signatures"),
            });
        }
        let mut names: Vec<String> = Vec::new();
        for (i, s) in signatures.iter().enumerate() {
            let index = i + 1;
            let bad = |msg: String| ApprovalError::BadSignature { index, msg };
            if s.len() > MAX_SIGNATURE {
                return Err(bad(format!("larger than {MAX_SIGNATURE} bytes")));
            }
            let sig = SshSig::from_pem(s).map_err(|e| {
                bad(format!(
                    "not an SSH signature file ({e}); give the STATEMENT.sig ssh-keygen wrote"
                ))
            })?;
            let who = self
                .list
                .iter()
                .find(|a| a.key.key_data() == sig.public_key())
                .ok_or_else(|| {
                    bad("made by a key that is not among the configured approvers".into())
                })?;
            if sig.namespace() != NAMESPACE {
                return Err(bad(format!(
                    "{} signed in namespace {:?}, not {NAMESPACE:?} (ssh-keygen -n {NAMESPACE})",
                    who.name,
                    sig.namespace()
                )));
            }
            who.key.verify(NAMESPACE, statement, &sig).map_err(|_| {
                bad(format!(
                    "{}'s signature does not match this statement (it was made for another text)",
                    who.name
                ))
            })?;
            if !names.contains(&who.name) {
                names.push(who.name.clone());
            }
        }
        if names.len() < self.threshold as usize {
            return Err(ApprovalError::TooFew {
                valid: names.len(),
                threshold: self.threshold,
                names: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            });
        }
        Ok(names)
    }
}
