//! The root service stays small: its dependency tree holds no async runtime, no TLS, no HTTP,
//! no other socket code, and nothing beyond a pinned list. Adding a crate to the service must
//! be a deliberate edit of this list, reviewed like a change to the service itself.

/// Crates whose presence means the service grew network, async or TLS code.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "async-io",
    "smol",
    "futures",
    "futures-util",
    "mio",
    "rustls",
    "openssl",
    "openssl-sys",
    "native-tls",
    "ring",
    "aws-lc-rs",
    "hyper",
    "reqwest",
    "http",
    "h2",
    "ureq",
    "curl",
    "socket2",
    "tonic",
    "axum",
    "warp",
    "actix-web",
    "aws-sdk-s3",
    "zstd",
    "serde_json",
];

/// Every crate the service may link (normal dependencies, proc macros included).
/// `docs/immutd-protocol.md` ("Dependencies") says why each one earns its place.
const ALLOWED: &[&str] = &[
    "anyhow",
    "arrayvec",
    "blake3",
    // Four-eyes approvals (issue 20): the statement codec and the k-of-n check.
    "bulwark-approval",
    "bulwark-format",
    "bulwark-immut-msg",
    "bulwark-immutd",
    // Standard output that never panics on a closed pipe; no dependencies of its own.
    "bulwark-stdout",
    "bulwark-sys",
    // Unix time and civil dates, no dependencies of its own.
    "bulwark-time",
    "cfg-if",
    "constant_time_eq",
    "cpufeatures",
    "hex",
    "libc",
    "proc-macro2",
    "quote",
    "syn",
    "thiserror",
    "thiserror-impl",
    "unicode-ident",
    // Verifying approvers' OpenSSH signatures (`ssh-key`, no default features: Ed25519 and
    // the SSHSIG format only) and what it needs: RustCrypto's Ed25519 and SHA-2, the
    // OpenSSH key and PEM/base64 encodings. `ssh-cipher` (with `cipher`, `inout`) is a
    // required dependency of `ssh-key` that decrypts private keys; the service never
    // reads one. No network, async or TLS code among them.
    "base64ct",
    "block-buffer",
    "cipher",
    "crypto-common",
    "curve25519-dalek",
    "curve25519-dalek-derive",
    "digest",
    "ed25519",
    "ed25519-dalek",
    "generic-array",
    "inout",
    "pem-rfc7468",
    "rand_core",
    "sha2",
    "signature",
    "ssh-cipher",
    "ssh-encoding",
    "ssh-key",
    "subtle",
    "typenum",
    "zeroize",
];

#[test]
fn dependency_tree_is_small_and_has_no_network_code() {
    let names = bulwark_testkit::deps::normal_tree("bulwark-immutd", env!("CARGO_MANIFEST_DIR"));
    assert!(
        names.contains("bulwark-immutd") && names.contains("libc"),
        "unexpected cargo tree output: {names:?}"
    );
    let forbidden: Vec<&String> = names
        .iter()
        .filter(|n| FORBIDDEN.contains(&n.as_str()))
        .collect();
    assert!(
        forbidden.is_empty(),
        "forbidden crates in the root service: {forbidden:?}"
    );
    let extra: Vec<&String> = names
        .iter()
        .filter(|n| !ALLOWED.contains(&n.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "the root service's dependency tree grew: {extra:?}; review them and add them to ALLOWED deliberately"
    );
}
