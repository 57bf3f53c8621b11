//! One way to skip: `SKIP <test>: <reason>` on stderr, then return. A test that cannot run
//! here says why and how to fix it; it never passes silently.

use std::fmt::Display;
use std::process::Command;

use crate::cmd::PATH_ENV;

/// Prints `SKIP <test>: <reason>`.
pub fn skip(test: &str, reason: impl Display) {
    eprintln!("SKIP {test}: {reason}");
}

/// Prints `SKIP <test>: <reason>` (formatted) and returns from the calling test.
#[macro_export]
macro_rules! skip {
    ($test:expr, $($reason:tt)+) => {{
        $crate::skip::skip($test, format_args!($($reason)+));
        return;
    }};
}

/// True when running as root.
pub fn is_root() -> bool {
    bulwark_sys::effective_uid() == 0
}

/// True when `tool` is on the standard PATH.
pub fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .env("PATH", PATH_ENV)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when running as root; prints `SKIP <test>: needs root for <what> …` otherwise.
pub fn require_root(test: &str, what: &str) -> bool {
    if !is_root() {
        skip(
            test,
            format_args!("needs root for {what} (CI runs as root)"),
        );
        return false;
    }
    true
}

/// True when every tool is installed; prints which one is missing otherwise.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    if let Some(t) = tools.iter().find(|t| !has_tool(t)) {
        skip(
            test,
            format_args!("the tool `{t}` is not installed (see .ci/run)"),
        );
        return false;
    }
    true
}

/// Root and the tools: the usual preamble of a root-only test.
pub fn can_run(test: &str, what: &str, tools: &[&str]) -> bool {
    require_root(test, what) && require_tools(test, tools)
}

/// The path of libfaketime, or `None` after a printed SKIP.
pub fn require_faketime(test: &str) -> Option<std::path::PathBuf> {
    let found = libfaketime();
    if found.is_none() {
        skip(
            test,
            "libfaketime.so.1 not found (apt-get install faketime)",
        );
    }
    found
}

/// The path of libfaketime when it is installed.
pub fn libfaketime() -> Option<std::path::PathBuf> {
    let out = crate::cmd::sh_ok(
        "ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 2>/dev/null | head -n1",
    )?;
    let p = out.trim();
    (!p.is_empty()).then(|| std::path::PathBuf::from(p))
}

/// An S3 endpoint with Object Lock for the tier tests (`.ci/run` starts one).
#[derive(Clone, Debug)]
pub struct S3Env {
    pub endpoint: String,
    pub access: String,
    pub secret: String,
}

impl S3Env {
    /// Writes the credentials file `bulwark-tier add --credentials` reads, mode 0600.
    pub fn write_credentials(&self, path: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            path,
            format!(
                "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                self.access, self.secret
            ),
        )
        .unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// `add REPO --endpoint E --bucket B --credentials C --create-bucket`: `bulwark-tier add`
    /// of this store for `repo`.
    pub fn add_args<'a>(
        &'a self,
        repo: &'a str,
        bucket: &'a str,
        creds: &'a std::path::Path,
    ) -> Vec<&'a str> {
        vec![
            "add",
            repo,
            "--endpoint",
            &self.endpoint,
            "--bucket",
            bucket,
            "--credentials",
            creds.to_str().unwrap(),
            "--create-bucket",
        ]
    }

    /// A bucket name no earlier run used: `<prefix>-<the clock in hex>`.
    pub fn new_bucket(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{prefix}-{:x}", nanos & 0xffff_ffff_ffff)
    }
}

/// `S3_ENDPOINT`, `S3_ACCESS_KEY` and `S3_SECRET_KEY`, or `None` after a printed SKIP.
pub fn require_s3(test: &str) -> Option<S3Env> {
    match (
        std::env::var("S3_ENDPOINT"),
        std::env::var("S3_ACCESS_KEY"),
        std::env::var("S3_SECRET_KEY"),
    ) {
        (Ok(endpoint), Ok(access), Ok(secret)) if !endpoint.is_empty() => Some(S3Env {
            endpoint,
            access,
            secret,
        }),
        _ => {
            skip(test, "S3_ENDPOINT, S3_ACCESS_KEY and S3_SECRET_KEY not set (run .ci/run as root, or start shared/s3/ci-s3-objectlock.sh and export its last line)");
            None
        }
    }
}
