//! The repository CA fingerprint a client pins, printed like an SSH host key.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use sha2::{Digest as _, Sha256};

/// SHA-256 of a certificate's DER encoding. Shown as `SHA256:` and unpadded base64, and
/// also accepted as 64 hex digits (with or without colons).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }
    /// Lowercase hex (used in file names).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0)
        )
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!("{s:?} is not a fingerprint: give the SHA256:… value printed by `bulwark-repo init`")
        };
        if let Some(b64) = s.strip_prefix("SHA256:") {
            let v = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64.trim_end_matches('='))
                .map_err(|_| bad())?;
            return v.try_into().map(Fingerprint).map_err(|_| bad());
        }
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_in_both_spellings() {
        let f = Fingerprint::of(b"certificate");
        assert_eq!(f.to_string().parse::<Fingerprint>().unwrap(), f);
        assert_eq!(f.to_hex().parse::<Fingerprint>().unwrap(), f);
        assert!("SHA256:abc".parse::<Fingerprint>().is_err());
        assert!("zz".parse::<Fingerprint>().is_err());
    }
}
