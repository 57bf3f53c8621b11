//! The transport service (`bulwark-repo serve`, TLS on 6162) is the process an attacker on the
//! network reaches first, so its binary stays free of the S3 SDK and of any async runtime or
//! HTTP stack: the S3 tier is `bulwark-tier`, a separate binary, and `bulwark-repo status`
//! reads the tier's local catalog (`bulwark-tier-catalog`) only. Adding a third-party crate to
//! this binary must be a deliberate edit of the list below, reviewed like a change to the
//! transport itself.

use std::collections::BTreeSet;

/// Crates whose presence means the transport grew the S3 SDK, an async runtime or HTTP code.
const FORBIDDEN: &[&str] = &[
    "bulwark-tier-s3",
    "bulwark-immutd",
    // Notifications (HTTP and SMTP clients) are sent by bulwark-monitor and the job runner.
    "bulwark-notify",
    "ureq",
    "lettre",
    "tokio",
    "tokio-util",
    "mio",
    "socket2",
    "futures",
    "futures-util",
    "async-std",
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "h2",
    "http",
    "http-body",
    "tower",
    "reqwest",
    "aws-lc-rs",
    "aws-lc-sys",
    "openssl",
    "openssl-sys",
];

/// Crate-name prefixes forbidden as a whole: the AWS SDK and its runtime (`aws-*`, `aws-smithy-*`).
const FORBIDDEN_PREFIXES: &[&str] = &["aws-", "smithy"];

/// Every third-party crate `bulwark-repo` may link (normal dependencies, proc macros
/// included). Workspace crates (`bulwark-*`) are not listed: what they pull in is.
const ALLOWED: &[&str] = &[
    "anstream",
    "anstyle",
    "anstyle-parse",
    "anstyle-query",
    "anyhow",
    "arrayvec",
    "asn1-rs",
    "asn1-rs-derive",
    "asn1-rs-impl",
    "base64",
    "bitflags",
    "blake3",
    "block-buffer",
    "cfg-if",
    "clap",
    "clap_builder",
    "clap_derive",
    "clap_lex",
    "colorchoice",
    "console", // progress bars of bulwark-cli-common: terminal drawing only
    "constant_time_eq",
    "cpufeatures",
    "crossbeam-channel",
    "crossbeam-utils",
    "crypto-common",
    "data-encoding",
    "der-parser",
    "deranged",
    "digest",
    "displaydoc",
    "equivalent",
    "fastrand", // through tempfile
    "generic-array",
    "getrandom",
    "hashbrown",
    "heck",
    "hex",
    "indexmap",
    "indicatif", // progress bars of bulwark-cli-common: terminal drawing only
    "is_terminal_polyfill",
    "itoa",
    "lazy_static",
    "libc",
    "linux-raw-sys",
    "log",
    "matchers",
    "memchr",
    "minimal-lexical",
    "nom",
    "nu-ansi-term",
    "num-bigint",
    "num-conv",
    "num-integer",
    "num-traits",
    "number_prefix", // progress bars of bulwark-cli-common: terminal drawing only
    "oid-registry",
    "once_cell",
    "pem",
    "pin-project-lite",
    "portable-atomic", // progress bars of bulwark-cli-common: terminal drawing only
    "powerfmt",
    "proc-macro2",
    "quote",
    "rcgen",
    "regex-automata",
    "regex-syntax",
    "ring",
    "rusticata-macros",
    "rustix",
    "rustls",
    "rustls-pki-types",
    "rustls-webpki",
    "serde",
    "serde_core",
    "serde_derive",
    "serde_json",
    "serde_spanned",
    "sha2",
    "sharded-slab",
    "smallvec",
    "strsim",
    "subtle",
    "syn",
    "synstructure",
    // Private folders for the QEMU helpers' sockets (bulwark-engine's live sources, via
    // bulwark-cli-common); the transport never starts them.
    "tempfile",
    "thiserror",
    "thiserror-impl",
    "thread_local",
    "time",
    "time-core",
    "time-macros",
    "toml",
    "toml_datetime",
    "toml_edit",
    "toml_write",
    "tracing",
    "tracing-attributes",
    "tracing-core",
    "tracing-log",
    "tracing-subscriber",
    "typenum",
    "unicode-ident",
    "unicode-width", // progress bars of bulwark-cli-common: terminal drawing only
    "untrusted",
    "utf8parse",
    "winnow",
    "x509-parser",
    "yasna",
    "zeroize",
    "zmij",
    "zstd",
    "zstd-safe",
    "zstd-sys",
    // The client's encryption (bulwark-crypto, docs/encryption.md), reached through
    // bulwark-cli-common → bulwark-engine: linked, never called by the service, which holds
    // no key and decrypts nothing (the server crate itself does not depend on it).
    "argon2",
    "base64ct",
    "blake2",
    "curve25519-dalek",
    "curve25519-dalek-derive",
    "password-hash",
    "rand_core",
    "x25519-dalek",
    "zeroize_derive",
];

fn tree() -> BTreeSet<String> {
    let names = bulwark_testkit::deps::normal_tree("bulwark-repo-cli", env!("CARGO_MANIFEST_DIR"));
    assert!(
        names.contains("bulwark-repo-cli") && names.contains("rustls"),
        "unexpected cargo tree output: {names:?}"
    );
    names
}

#[test]
fn the_transport_binary_links_no_s3_sdk_no_async_runtime_and_no_http_stack() {
    let forbidden: Vec<String> = tree()
        .into_iter()
        .filter(|n| {
            FORBIDDEN.contains(&n.as_str()) || FORBIDDEN_PREFIXES.iter().any(|p| n.starts_with(p))
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "forbidden crates in bulwark-repo, the binary that listens on 6162: {forbidden:?}; \
         S3 code belongs in bulwark-tier (crates/tier-cli), tier state it only reads in bulwark-tier-catalog"
    );
}

#[test]
fn the_transport_binarys_dependency_tree_is_pinned() {
    let extra: Vec<String> = tree()
        .into_iter()
        .filter(|n| !n.starts_with("bulwark-") && !ALLOWED.contains(&n.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "bulwark-repo's dependency tree grew: {extra:?}; review them and add them to ALLOWED \
         in crates/repo-cli/tests/deps.rs deliberately"
    );
}
