//! NBD URIs as QEMU and libnbd spell them (the NBD URI specification):
//! `nbd://HOST[:PORT]/EXPORT` and `nbd+unix:///EXPORT?socket=PATH`.
//!
//! TLS (`nbds…`) and vsock are refused with a message saying so; unknown query parameters
//! are refused rather than ignored, so a typo never silently changes what is read.

use std::fmt;
use std::path::PathBuf;

/// The default NBD port.
pub const DEFAULT_PORT: u16 = 10809;

/// Where an export is and what it is called.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// TCP: host name or address (IPv6 without brackets) and port.
    Tcp { host: String, port: u16 },
    /// A Unix socket.
    Unix { socket: PathBuf },
}

/// A parsed NBD URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NbdUri {
    pub endpoint: Endpoint,
    /// The export name (may be empty: the server's default export).
    pub export: String,
}

/// A string that is not an NBD URI Bulwark can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("NBD URI {uri:?}: {why}")]
pub struct UriError {
    pub uri: String,
    pub why: String,
}

/// True when `s` looks like an NBD URI (its scheme starts with `nbd`), whether or not it is valid.
pub fn is_nbd_uri(s: &str) -> bool {
    s.split_once("://")
        .is_some_and(|(scheme, _)| scheme.starts_with("nbd"))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl NbdUri {
    /// Parses an NBD URI.
    pub fn parse(uri: &str) -> Result<NbdUri, UriError> {
        let bad = |why: &str| UriError {
            uri: uri.to_string(),
            why: why.to_string(),
        };
        if uri.len() > 8192 {
            return Err(bad("longer than 8192 characters"));
        }
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
            bad("no scheme: write nbd://HOST/EXPORT or nbd+unix:///EXPORT?socket=PATH")
        })?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let rest = rest.split('#').next().unwrap_or("");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let export =
            percent_decode(path).ok_or_else(|| bad("bad percent-encoding in the export name"))?;
        if export.len() > crate::proto::MAX_NAME as usize {
            return Err(bad("export name longer than 4096 bytes"));
        }
        let mut socket = None;
        for kv in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|s| !s.is_empty())
        {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_decode(v).ok_or_else(|| bad("bad percent-encoding in the query"))?;
            match k {
                "socket" => socket = Some(PathBuf::from(v)),
                _ if k.starts_with("tls") => {
                    return Err(bad("TLS parameters given, but Bulwark's NBD client does not speak TLS: use a Unix socket or a trusted local network"))
                }
                _ => return Err(bad(&format!("unknown query parameter {k:?}"))),
            }
        }
        let endpoint = match scheme {
            "nbd" | "nbd+tcp" => {
                if socket.is_some() {
                    return Err(bad("socket= belongs to nbd+unix:// URIs"));
                }
                let authority = authority.rsplit('@').next().unwrap_or("");
                let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                    let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in the host"))?;
                    (h.to_string(), after.strip_prefix(':'))
                } else {
                    match authority.rsplit_once(':') {
                        Some((h, p)) => (h.to_string(), Some(p)),
                        None => (authority.to_string(), None),
                    }
                };
                if host.is_empty() {
                    return Err(bad("no host: write nbd://HOST[:PORT]/EXPORT"));
                }
                let port = match port {
                    None | Some("") => DEFAULT_PORT,
                    Some(p) => p.parse().map_err(|_| bad("the port is not a number from 1 to 65535"))?,
                };
                if port == 0 {
                    return Err(bad("port 0"));
                }
                Endpoint::Tcp { host, port }
            }
            "nbd+unix" => {
                if !authority.is_empty() {
                    return Err(bad("nbd+unix:// URIs have no host: write nbd+unix:///EXPORT?socket=PATH"));
                }
                let socket = socket.ok_or_else(|| bad("no socket=PATH"))?;
                if socket.as_os_str().is_empty() {
                    return Err(bad("empty socket path"));
                }
                Endpoint::Unix { socket }
            }
            s if s.starts_with("nbds") => {
                return Err(bad("nbds (NBD over TLS) is not supported: use a Unix socket or plain nbd:// on a trusted network"))
            }
            "nbd+vsock" => return Err(bad("vsock is not supported")),
            _ => return Err(bad("unknown scheme: use nbd:// or nbd+unix://")),
        };
        Ok(NbdUri { endpoint, export })
    }

    /// A Unix-socket URI for `export` on `socket`.
    pub fn unix(socket: impl Into<PathBuf>, export: &str) -> NbdUri {
        NbdUri {
            endpoint: Endpoint::Unix {
                socket: socket.into(),
            },
            export: export.to_string(),
        }
    }
}

fn encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

impl fmt::Display for NbdUri {
    /// The canonical spelling (what Bulwark records as the source's address).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd://[{host}]:{port}/{}", encode(&self.export))
            }
            Endpoint::Tcp { host, port } => {
                write!(f, "nbd://{host}:{port}/{}", encode(&self.export))
            }
            Endpoint::Unix { socket } => write!(
                f,
                "nbd+unix:///{}?socket={}",
                encode(&self.export),
                encode(&socket.to_string_lossy())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_unix_uris_parse_as_qemu_writes_them() {
        let u = NbdUri::parse("nbd://localhost/disk0").unwrap();
        assert_eq!(
            u.endpoint,
            Endpoint::Tcp {
                host: "localhost".into(),
                port: DEFAULT_PORT
            }
        );
        assert_eq!(u.export, "disk0");
        let u = NbdUri::parse("nbd://127.0.0.1:10810").unwrap();
        assert_eq!(u.export, "");
        assert!(matches!(u.endpoint, Endpoint::Tcp { port: 10810, .. }));
        let u = NbdUri::parse("nbd://[::1]:7000/a%20b").unwrap();
        assert_eq!(
            u.endpoint,
            Endpoint::Tcp {
                host: "::1".into(),
                port: 7000
            }
        );
        assert_eq!(u.export, "a b");
        let u = NbdUri::parse("nbd+unix:///vda?socket=/run/x%20y.sock").unwrap();
        assert_eq!(
            u.endpoint,
            Endpoint::Unix {
                socket: "/run/x y.sock".into()
            }
        );
        assert_eq!(u.export, "vda");
        let u = NbdUri::parse("nbd+unix://?socket=/tmp/s").unwrap();
        assert_eq!(u.export, "");
        for s in [
            "nbd://localhost:10809/disk0",
            "nbd+unix:///vda?socket=/run/x%20y.sock",
            "nbd://[::1]:7000/a%20b",
        ] {
            let u = NbdUri::parse(s).unwrap();
            assert_eq!(NbdUri::parse(&u.to_string()).unwrap(), u, "{s}");
        }
        assert!(is_nbd_uri("nbd+unix:///x?socket=y") && !is_nbd_uri("/dev/sda"));
    }

    #[test]
    fn unusable_uris_are_refused_with_the_reason() {
        for (s, why) in [
            ("nbd+unix:///vda", "no socket"),
            ("nbd+unix://host/vda?socket=/s", "no host"),
            ("nbd:///vda", "no host"),
            ("nbd://h:99999/x", "port"),
            ("nbds://h/x", "TLS"),
            ("nbd://h/x?tls-certificates=/etc", "TLS"),
            ("nbd+unix:///x?socket=/s&foo=1", "unknown query"),
            ("nbd://h/%zz", "percent"),
            ("http://h/x", "scheme"),
            ("nbd+vsock://1/x", "vsock"),
        ] {
            let e = NbdUri::parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
