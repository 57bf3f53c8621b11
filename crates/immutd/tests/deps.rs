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
const ALLOWED: &[&str] = &[
    "anyhow",
    "arrayvec",
    "blake3",
    "bulwark-format",
    "bulwark-immut-msg",
    "bulwark-immutd",
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
