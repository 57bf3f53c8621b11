//! The S3 client: path-style addressing, an explicit endpoint, retries with backoff, and the
//! store's own clock read from every response's `Date` header.

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials as SdkCredentials, Intercept, Region,
    RequestChecksumCalculation, ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, DefaultRetention, ObjectLockConfiguration,
    ObjectLockEnabled, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
    ObjectLockRule,
};
use aws_sdk_s3::Client;
use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use base64::Engine;
use md5::Digest as _;

use crate::settings::{Credentials, TierSettings};
use crate::{Result, TierError};

/// Clock skew between this host and the store beyond which a warning is given.
pub const SKEW_WARN_SECS: i64 = 30;
/// Parts uploaded at the same time.
const PARALLEL_PARTS: usize = 4;

/// The store's clock as last seen: (store unix secs, local unix secs) of one response.
#[derive(Debug, Default)]
struct StoreClock(Mutex<Option<(i64, i64)>>);

#[derive(Debug)]
struct DateCapture(Arc<StoreClock>);

impl Intercept for DateCapture {
    fn name(&self) -> &'static str {
        "bulwark-date-capture"
    }
    fn read_after_transmit(
        &self,
        ctx: &BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        if let Some(d) = ctx.response().headers().get("date") {
            if let Ok(t) = DateTime::from_str(d, Format::HttpDate) {
                if let Ok(mut g) = self.0 .0.lock() {
                    *g = Some((t.secs(), now_unix()));
                }
            }
        }
        Ok(())
    }
}

/// This host's clock, unix seconds.
pub(crate) fn now_unix() -> i64 {
    bulwark_time::UnixTime::now().secs()
}

/// What the store says about one object version.
#[derive(Clone, Debug, Default)]
pub struct VersionInfo {
    pub size: u64,
    /// `COMPLIANCE`, `GOVERNANCE`, or empty when unlocked.
    pub lock_mode: String,
    /// Retain-until (store clock), 0 when none.
    pub retain_until: i64,
    pub metadata: HashMap<String, String>,
}

/// One version from a listing.
#[derive(Clone, Debug)]
pub struct ListedVersion {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    pub last_modified: i64,
}

/// A connection to one bucket.
pub struct Store {
    rt: tokio::runtime::Runtime,
    client: Client,
    pub(crate) bucket: String,
    pub(crate) endpoint: String,
    clock: Arc<StoreClock>,
}

/// The store's error code and a one-line message for an SDK error.
fn describe<E, R>(e: &SdkError<E, R>) -> (Option<String>, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().map(str::to_string);
    let why = match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("")
            )
        }
        SdkError::DispatchFailure(_) => {
            format!(
                "cannot reach the store ({}); is the endpoint right and the store running?",
                source_chain(e)
            )
        }
        SdkError::TimeoutError(_) => "the store did not answer in time".to_string(),
        other => source_chain(other),
    };
    (code, why)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn is_credentials_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken")
    )
}

/// Base64 of the MD5 of `data`, for `Content-MD5` (the store checks it).
pub(crate) fn content_md5(data: &[u8]) -> (String, String) {
    let d = md5::Md5::digest(data);
    (
        base64::engine::general_purpose::STANDARD.encode(d),
        hex::encode(d),
    )
}

fn dt(secs: i64) -> DateTime {
    DateTime::from_secs(secs)
}

impl Store {
    /// A client for `settings` with `creds`; makes no request yet.
    pub fn new(settings: &TierSettings, creds: &Credentials) -> Result<Store> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| TierError::config(format!("starting the I/O runtime: {e}")))?;
        let clock = Arc::new(StoreClock::default());
        let retry = aws_sdk_s3::config::retry::RetryConfig::standard()
            .with_max_attempts(settings.max_attempts)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .build();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&settings.endpoint)
            .region(Region::new(settings.region.clone()))
            .credentials_provider(SdkCredentials::new(
                &creds.access_key_id,
                &creds.secret_access_key,
                None,
                None,
                "bulwark-tier",
            ))
            .force_path_style(true)
            // We send Content-MD5 ourselves; trailing checksums are not understood by every
            // S3-compatible store.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(retry)
            .timeout_config(timeouts)
            .interceptor(DateCapture(clock.clone()))
            .build();
        Ok(Store {
            rt,
            client: Client::from_conf(conf),
            bucket: settings.bucket.clone(),
            endpoint: settings.endpoint.clone(),
            clock,
        })
    }

    /// Runs one SDK call to completion, naming `op` and `key` in its error.
    fn call<T, E, R>(
        &self,
        op: &'static str,
        key: &str,
        request: impl std::future::Future<Output = std::result::Result<T, SdkError<E, R>>>,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        self.rt.block_on(request).map_err(|e| self.err(op, key, e))
    }

    fn err<E, R>(&self, op: &'static str, key: &str, e: SdkError<E, R>) -> TierError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (code, why) = describe(&e);
        if is_credentials_code(code.as_deref()) {
            return TierError::BadCredentials {
                endpoint: self.endpoint.clone(),
                code: code.unwrap_or_default(),
            };
        }
        TierError::S3 {
            op,
            key: format!("{}/{key}", self.bucket),
            code,
            why,
        }
    }

    /// The store's clock minus this host's, in seconds, as of the last response.
    pub fn skew(&self) -> Option<i64> {
        self.clock
            .0
            .lock()
            .ok()
            .and_then(|g| g.map(|(store, local)| store - local))
    }

    /// Now by the store's clock (this host's clock corrected by the last seen skew).
    pub fn store_now(&self) -> i64 {
        now_unix() + self.skew().unwrap_or(0)
    }

    /// Whether Object Lock is enabled on the bucket (`Err` on missing bucket or credentials).
    pub fn object_lock_enabled(&self) -> Result<std::result::Result<(), String>> {
        let r = self.rt.block_on(
            self.client
                .get_object_lock_configuration()
                .bucket(&self.bucket)
                .send(),
        );
        match r {
            Ok(o) => Ok(
                match o
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                {
                    Some(ObjectLockEnabled::Enabled) => Ok(()),
                    _ => Err("its Object Lock configuration is not Enabled".to_string()),
                },
            ),
            Err(e) => match e.code() {
                Some("ObjectLockConfigurationNotFoundError" | "InvalidBucketState") => {
                    Ok(Err(describe(&e).1))
                }
                Some("NoSuchBucket") => Err(TierError::config(format!(
                    "bucket {} does not exist at {}; create it with Object Lock enabled, e.g. `aws s3api create-bucket --bucket {} --object-lock-enabled-for-bucket --endpoint-url {}`",
                    self.bucket, self.endpoint, self.bucket, self.endpoint
                ))),
                _ => Err(self.err("GetObjectLockConfiguration", "", e)),
            },
        }
    }

    /// Creates the bucket, with Object Lock (and so versioning) when `object_lock` is set.
    pub fn create_bucket(&self, object_lock: bool) -> Result<()> {
        self.call(
            "CreateBucket",
            "",
            self.client
                .create_bucket()
                .bucket(&self.bucket)
                .object_lock_enabled_for_bucket(object_lock)
                .send(),
        )?;
        Ok(())
    }

    /// Sets the bucket's default retention: COMPLIANCE for `days`.
    pub fn set_default_retention(&self, days: u32) -> Result<()> {
        let conf = ObjectLockConfiguration::builder()
            .object_lock_enabled(ObjectLockEnabled::Enabled)
            .rule(
                ObjectLockRule::builder()
                    .default_retention(
                        DefaultRetention::builder()
                            .mode(ObjectLockRetentionMode::Compliance)
                            .days(days.min(i32::MAX as u32) as i32)
                            .build(),
                    )
                    .build(),
            )
            .build();
        self.call(
            "PutObjectLockConfiguration",
            "",
            self.client
                .put_object_lock_configuration()
                .bucket(&self.bucket)
                .object_lock_configuration(conf)
                .send(),
        )?;
        Ok(())
    }

    /// Uploads `data` as one object with a COMPLIANCE lock until `until`; returns its version.
    pub fn put_locked(
        &self,
        key: &str,
        data: Vec<u8>,
        until: i64,
        meta: &HashMap<String, String>,
    ) -> Result<String> {
        let (md5, _) = content_md5(&data);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_md5(md5)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(dt(until))
            .body(ByteStream::from(data));
        for (k, v) in meta {
            req = req.metadata(k, v);
        }
        let out = self.call("PutObject", key, req.send())?;
        out.version_id().map(str::to_string).ok_or_else(|| TierError::Object {
            key: key.to_string(),
            version: String::new(),
            why: "the store returned no version id: is versioning (Object Lock) on for this bucket?".into(),
        })
    }

    /// Starts a multipart upload with lock headers (which some stores ignore: the caller sets
    /// retention explicitly after completing it).
    pub fn create_multipart(
        &self,
        key: &str,
        until: i64,
        meta: &HashMap<String, String>,
    ) -> Result<String> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(dt(until));
        for (k, v) in meta {
            req = req.metadata(k, v);
        }
        let out = self.call("CreateMultipartUpload", key, req.send())?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| TierError::S3 {
                op: "CreateMultipartUpload",
                key: key.to_string(),
                code: None,
                why: "no upload id in the answer".into(),
            })
    }

    /// Parts the store already holds for an upload: part number → (ETag without quotes, size).
    /// `None` when the upload no longer exists.
    pub fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<HashMap<i32, (String, u64)>>> {
        let mut out = HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            let r = self.rt.block_on(
                self.client
                    .list_parts()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .set_part_number_marker(marker.clone())
                    .send(),
            );
            let o = match r {
                Ok(o) => o,
                Err(e) if e.code() == Some("NoSuchUpload") => return Ok(None),
                Err(e) => return Err(self.err("ListParts", key, e)),
            };
            for p in o.parts() {
                if let (Some(n), Some(tag)) = (p.part_number(), p.e_tag()) {
                    out.insert(
                        n,
                        (
                            tag.trim_matches('"').to_string(),
                            p.size().unwrap_or(0) as u64,
                        ),
                    );
                }
            }
            match (o.is_truncated(), o.next_part_number_marker()) {
                (Some(true), Some(m)) if Some(m) != marker.as_deref() => marker = Some(m.into()),
                _ => return Ok(Some(out)),
            }
        }
    }

    /// Uploads the parts of `file` that `have` does not already hold (matched by MD5), each
    /// with Content-MD5, at most `PARALLEL_PARTS` at a time, then completes the upload.
    /// Returns (version id, BLAKE3 of the file, parts uploaded now).
    pub fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &mut std::fs::File,
        size: u64,
        part_size: u64,
        have: &HashMap<i32, (String, u64)>,
    ) -> Result<(String, blake3::Hash, u64)> {
        file.rewind()
            .map_err(|e| TierError::config(format!("rewinding {key}: {e}")))?;
        let mut hasher = blake3::Hasher::new();
        let parts_total = size.div_ceil(part_size).max(1);
        let mut done: Vec<(i32, String)> = Vec::new();
        let mut sent = 0u64;
        self.rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for n in 1..=parts_total {
                let len = part_size.min(size - (n - 1) * part_size) as usize;
                let mut buf = vec![0u8; len];
                file.read_exact(&mut buf)
                    .map_err(|e| TierError::config(format!("reading part {n} of {key}: {e}")))?;
                hasher.update(&buf);
                let (md5, md5_hex) = content_md5(&buf);
                let n = n as i32;
                if let Some((tag, psize)) = have.get(&n) {
                    if *tag == md5_hex && *psize == len as u64 {
                        done.push((n, format!("\"{tag}\"")));
                        continue;
                    }
                }
                while set.len() >= PARALLEL_PARTS {
                    if let Some(r) = set.join_next().await {
                        done.push(r.map_err(|e| TierError::config(e.to_string()))??);
                    }
                }
                let req = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(n)
                    .content_md5(md5)
                    .body(ByteStream::from(buf));
                let key2 = format!("{}/{key}", self.bucket);
                let endpoint = self.endpoint.clone();
                sent += 1;
                set.spawn(async move {
                    let out = req.send().await.map_err(|e| {
                        let (code, why) = describe(&e);
                        if is_credentials_code(code.as_deref()) {
                            return TierError::BadCredentials {
                                endpoint,
                                code: code.unwrap_or_default(),
                            };
                        }
                        TierError::S3 {
                            op: "UploadPart",
                            key: key2.clone(),
                            code,
                            why,
                        }
                    })?;
                    let tag = out.e_tag().unwrap_or_default().to_string();
                    Ok::<_, TierError>((n, tag))
                });
            }
            while let Some(r) = set.join_next().await {
                done.push(r.map_err(|e| TierError::config(e.to_string()))??);
            }
            Ok::<_, TierError>(())
        })?;
        done.sort_by_key(|(n, _)| *n);
        let parts: Vec<CompletedPart> = done
            .iter()
            .map(|(n, tag)| CompletedPart::builder().part_number(*n).e_tag(tag).build())
            .collect();
        let out = self.call(
            "CompleteMultipartUpload",
            key,
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send(),
        )?;
        let version = out
            .version_id()
            .map(str::to_string)
            .ok_or_else(|| TierError::Object {
                key: key.to_string(),
                version: String::new(),
                why: "the store returned no version id after completing the upload".into(),
            })?;
        Ok((version, hasher.finalize(), sent))
    }

    /// Sets COMPLIANCE retention until `until` on one version (refused by an enforcing store
    /// if that would shorten it).
    pub fn put_retention(&self, key: &str, version: &str, until: i64) -> Result<()> {
        self.call(
            "PutObjectRetention",
            key,
            self.client
                .put_object_retention()
                .bucket(&self.bucket)
                .key(key)
                .version_id(version)
                .retention(
                    ObjectLockRetention::builder()
                        .mode(ObjectLockRetentionMode::Compliance)
                        .retain_until_date(dt(until))
                        .build(),
                )
                .send(),
        )?;
        Ok(())
    }

    /// Reads back a version's retention: (mode, retain-until), `None` when it has none.
    pub fn get_retention(&self, key: &str, version: &str) -> Result<Option<(String, i64)>> {
        let r = self.rt.block_on(
            self.client
                .get_object_retention()
                .bucket(&self.bucket)
                .key(key)
                .version_id(version)
                .send(),
        );
        match r {
            Ok(o) => Ok(o.retention().map(|r| {
                (
                    r.mode().map(|m| m.as_str().to_string()).unwrap_or_default(),
                    r.retain_until_date().map(|d| d.secs()).unwrap_or(0),
                )
            })),
            Err(e)
                if matches!(
                    e.code(),
                    Some("NoSuchObjectLockConfiguration" | "ObjectLockConfigurationNotFoundError")
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err("GetObjectRetention", key, e)),
        }
    }

    /// Deletes one version (an enforcing store refuses it while the version is locked).
    pub fn delete_version(&self, key: &str, version: &str) -> Result<()> {
        self.delete(key, Some(version))
    }

    /// A plain delete: adds a delete marker, removes no version.
    pub fn delete_latest(&self, key: &str) -> Result<()> {
        self.delete(key, None)
    }

    /// `DeleteObject` of `version`, or without a version (a delete marker).
    fn delete(&self, key: &str, version: Option<&str>) -> Result<()> {
        self.call(
            "DeleteObject",
            key,
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version.map(str::to_string))
                .send(),
        )?;
        Ok(())
    }

    /// Size, lock and metadata of one version.
    pub fn head_version(&self, key: &str, version: &str) -> Result<VersionInfo> {
        let o = self.call(
            "HeadObject",
            key,
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .version_id(version)
                .send(),
        )?;
        Ok(VersionInfo {
            size: o.content_length().unwrap_or(0).max(0) as u64,
            lock_mode: o
                .object_lock_mode()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            retain_until: o
                .object_lock_retain_until_date()
                .map(|d| d.secs())
                .unwrap_or(0),
            metadata: o.metadata().cloned().unwrap_or_default(),
        })
    }

    /// Downloads one version into `out`, refusing more than `max_len` bytes; returns the
    /// number of bytes and their BLAKE3.
    pub fn download(
        &self,
        key: &str,
        version: &str,
        out: &mut std::fs::File,
        max_len: u64,
    ) -> Result<(u64, blake3::Hash)> {
        self.rt.block_on(async {
            let o = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .version_id(version)
                .send()
                .await
                .map_err(|e| self.err("GetObject", key, e))?;
            if o.content_length().unwrap_or(0) as u64 > max_len {
                return Err(TierError::Object {
                    key: key.to_string(),
                    version: version.to_string(),
                    why: format!("larger than the {max_len} bytes recorded"),
                });
            }
            let mut body = o.body;
            let mut hasher = blake3::Hasher::new();
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| TierError::S3 {
                    op: "GetObject",
                    key: key.to_string(),
                    code: None,
                    why: source_chain(&e),
                })?;
                n += chunk.len() as u64;
                if n > max_len {
                    return Err(TierError::Object {
                        key: key.to_string(),
                        version: version.to_string(),
                        why: format!("larger than the {max_len} bytes recorded"),
                    });
                }
                hasher.update(&chunk);
                out.write_all(&chunk).map_err(|e| {
                    TierError::config(format!("writing a local copy of {key}: {e}"))
                })?;
            }
            Ok((n, hasher.finalize()))
        })
    }

    /// Every version of every key under `prefix`.
    pub fn list_versions(&self, prefix: &str) -> Result<Vec<ListedVersion>> {
        let mut out = Vec::new();
        let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
        loop {
            let o = self.call(
                "ListObjectVersions",
                prefix,
                self.client
                    .list_object_versions()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_key_marker(km.clone())
                    .set_version_id_marker(vm.clone())
                    .send(),
            )?;
            for v in o.versions() {
                if let (Some(k), Some(id)) = (v.key(), v.version_id()) {
                    out.push(ListedVersion {
                        key: k.to_string(),
                        version_id: id.to_string(),
                        size: v.size().unwrap_or(0).max(0) as u64,
                        last_modified: v.last_modified().map(|d| d.secs()).unwrap_or(0),
                    });
                }
            }
            if o.is_truncated() != Some(true) {
                return Ok(out);
            }
            let (nk, nv) = (
                o.next_key_marker().map(str::to_string),
                o.next_version_id_marker().map(str::to_string),
            );
            if nk.is_none() || (nk == km && nv == vm) {
                return Ok(out);
            }
            (km, vm) = (nk, nv);
        }
    }
}
