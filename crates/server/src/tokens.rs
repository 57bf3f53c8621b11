//! Single-use enrollment tokens. The token is printed once; only its BLAKE3 hash is stored,
//! with the client name it enrolls and its expiry. It is compared in constant time and
//! consumed by removing its file, which only one of two racing uses can do.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::files::{is_not_found, read_bounded, write_private};
use crate::pki::NetPaths;
use crate::{Result, ServerError};

const PREFIX: &str = "BWT1";

/// What a stored token says (never the token itself).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    /// The client name the token enrolls.
    pub client: String,
    /// BLAKE3 of the token's secret part, hex.
    pub hash: String,
    pub created_unix: i64,
    pub expires_unix: i64,
    /// Issued with `--replace`: it may enroll a name that has an active certificate (a
    /// replacement machine). Without it, the name must still be free when the token is used.
    #[serde(default)]
    pub replace: bool,
}

/// Why a token was refused; the peer only learns "rejected".
#[derive(Debug)]
pub(crate) enum TokenRefusal {
    Malformed,
    Unknown,
    Wrong,
    Expired,
    AlreadyUsed,
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenRefusal::Malformed => "malformed token",
            TokenRefusal::Unknown => "unknown token id",
            TokenRefusal::Wrong => "wrong token secret",
            TokenRefusal::Expired => "expired token",
            TokenRefusal::AlreadyUsed => "token already used",
        })
    }
}

fn token_path(p: &NetPaths, id: &str) -> PathBuf {
    p.tokens().join(format!("{id}.toml"))
}

/// Creates a token enrolling `client`, valid for `valid_secs`, and returns it.
pub fn create_token(
    repo: &std::path::Path,
    client: &str,
    valid_secs: i64,
    replace: bool,
) -> Result<(String, TokenInfo)> {
    bulwark_format::validate_name("client", client)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let p = NetPaths::new(repo);
    if !p.tokens().is_dir() {
        return Err(ServerError::Config(format!(
            "{} has no network identity: it was created without one; give it one with `bulwark-repo init {} --add-network`",
            repo.display(),
            repo.display()
        )));
    }
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut id)
        .map_err(|e| ServerError::Config(format!("no randomness: {e}")))?;
    getrandom::getrandom(&mut secret)
        .map_err(|e| ServerError::Config(format!("no randomness: {e}")))?;
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let now = crate::now_unix();
    let info = TokenInfo {
        client: client.to_string(),
        hash: blake3::hash(secret.as_bytes()).to_hex().to_string(),
        created_unix: now,
        expires_unix: now.saturating_add(valid_secs),
        replace,
    };
    let text = toml::to_string(&info).map_err(|e| ServerError::Config(e.to_string()))?;
    write_private(&token_path(&p, &id), text.as_bytes(), true)?;
    Ok((format!("{PREFIX}-{id}-{secret}"), info))
}

/// Checks `token` and consumes it; returns what it says (the client name it enrolls).
pub(crate) fn redeem(
    p: &NetPaths,
    token: &str,
    now: i64,
) -> Result<std::result::Result<TokenInfo, TokenRefusal>> {
    let mut parts = token.trim().splitn(3, '-');
    let (Some(PREFIX), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(Err(TokenRefusal::Malformed));
    };
    let hexok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hexok(id, 16) || !hexok(secret, 64) {
        return Ok(Err(TokenRefusal::Malformed));
    }
    let path = token_path(p, &id.to_ascii_lowercase());
    let info: TokenInfo = match read_bounded(&path, 4096) {
        Ok(b) => toml::from_str(&String::from_utf8_lossy(&b))
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?,
        Err(e) if is_not_found(&e) => return Ok(Err(TokenRefusal::Unknown)),
        Err(e) => return Err(e),
    };
    let actual = blake3::hash(secret.to_ascii_lowercase().as_bytes()).to_hex();
    if !bool::from(actual.as_bytes().ct_eq(info.hash.as_bytes())) {
        return Ok(Err(TokenRefusal::Wrong));
    }
    if now >= info.expires_unix {
        let _ = std::fs::remove_file(&path);
        return Ok(Err(TokenRefusal::Expired));
    }
    // Removing the file is the claim: of two racing uses, one remove fails.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(TokenRefusal::AlreadyUsed))
        }
        Err(e) => return Err(ServerError::io(&path, "removing used token")(e)),
    }
    bulwark_repository::fsync_dir(&p.tokens())?;
    Ok(Ok(info))
}

/// Parses `90s`, `15m`, `1h`, `7d` (or plain seconds) into seconds.
pub fn parse_duration(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 7d"))?;
    match n.checked_mul(mult) {
        Some(secs) if n > 0 && secs <= 366 * 86_400 => Ok(secs),
        _ => Err(format!(
            "{s:?} is out of range: more than 0, at most a year"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, NetPaths) {
        let d = tempfile::tempdir().unwrap();
        let p = NetPaths::new(d.path());
        std::fs::create_dir_all(p.tokens()).unwrap();
        (d, p)
    }

    #[test]
    fn a_token_works_once() {
        let (d, p) = repo();
        let (tok, _) = create_token(d.path(), "alice", 3600, false).unwrap();
        let now = crate::now_unix();
        assert_eq!(redeem(&p, &tok, now).unwrap().unwrap().client, "alice");
        assert!(matches!(
            redeem(&p, &tok, now).unwrap(),
            Err(TokenRefusal::Unknown)
        ));
    }

    #[test]
    fn wrong_expired_and_malformed_tokens_are_refused() {
        let (d, p) = repo();
        let (tok, _) = create_token(d.path(), "bob", 60, false).unwrap();
        let now = crate::now_unix();
        let mut wrong = tok.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(
            redeem(&p, &wrong, now).unwrap(),
            Err(TokenRefusal::Wrong)
        ));
        assert!(matches!(
            redeem(&p, "BWT1-../../x-00", now).unwrap(),
            Err(TokenRefusal::Malformed)
        ));
        assert!(matches!(
            redeem(&p, &tok, now + 61).unwrap(),
            Err(TokenRefusal::Expired)
        ));
        // The stored file holds the hash, never the token.
        for f in std::fs::read_dir(p.tokens()).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            assert!(!text.contains(tok.rsplit('-').next().unwrap()));
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1h").unwrap(), 3600);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("2d").unwrap(), 172_800);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("x").is_err());
    }
}
