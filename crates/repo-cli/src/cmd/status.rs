//! `bulwark-repo status`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bulwark_immut_msg::layout;
use bulwark_repository::{ReflinkSupport, Repository, REFLINK_ADVICE};

/// Files in `incoming/` older than this are reported: sealing takes seconds.
const SEAL_DELAY_ALERT: Duration = Duration::from_secs(60);

/// The files in the folder `incoming` that have waited longer than sealing takes, as (name,
/// seconds waited).
pub(crate) fn waiting_to_be_sealed(incoming: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut waiting = Vec::new();
    for ent in std::fs::read_dir(incoming)? {
        let ent = ent?;
        let age = ent
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        if age > SEAL_DELAY_ALERT {
            waiting.push((
                ent.file_name().to_string_lossy().into_owned(),
                age.as_secs(),
            ));
        }
    }
    Ok(waiting)
}

/// Arguments of `bulwark-repo status`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
}

/// Runs `bulwark-repo status`: exit 0, or 1 when files wait too long to be sealed, the
/// immutability service reports a clock alert (or does not answer), or the last verify found
/// damage.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let cfg = repo.config();
    let incoming = layout::incoming_dir(&a.dir);
    let waiting = waiting_to_be_sealed(&incoming)
        .with_context(|| format!("listing {}", incoming.display()))?;
    let jobs = repo.jobs()?;
    // When each job was last verified: the oldest verify time over its points
    // (`bulwark-repo verify`, health/verified.json); `None` while a point never was.
    let verified_record = bulwark_jobs::verified::Verified::load(repo.root()).unwrap_or_default();
    let mut verified = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let ids: Vec<String> = repo
            .scan_job(j)?
            .points
            .iter()
            .map(|p| p.meta.point.to_hex())
            .collect();
        verified.push(verified_record.oldest(j, &ids));
    }
    // The probe writes a temporary file: on a read-only or full repository it cannot, and
    // status still reports everything else.
    let reflink = repo
        .reflink_support()
        .map_err(|e| bulwark_repository::error_chain(&e));
    // From the tier catalog alone: this binary links no S3 SDK (`bulwark-tier verify` asks the store).
    let tiers = bulwark_tier_catalog::status(&repo)?;
    // The immutability service's clock: a freeze or a stepped clock is an alert here too.
    let immutd = cfg.immutd_socket.as_ref().map(|sock| {
        bulwark_immut_msg::ImmutClient::connect(sock)
            .and_then(|mut c| c.status())
            .map_err(|e| bulwark_repository::error_chain(&e))
    });
    let mut alerts: Vec<String> = Vec::new();
    match &immutd {
        Some(Ok(st)) if st.unlocks_frozen => alerts.push(format!(
            "unlocks are FROZEN by the immutability service's clock alert: {}",
            st.alert
        )),
        Some(Ok(st)) if !st.alert.is_empty() => {
            alerts.push(format!("the immutability service's clock: {}", st.alert))
        }
        Some(Err(e)) => alerts.push(format!(
            "the immutability service does not answer ({e}): new restore points are not sealed"
        )),
        _ => {}
    }
    // Root's hand on sealed files or settings, a refused configuration (issue 20).
    if let Some(Ok(st)) = &immutd {
        for a in &st.protection_alerts {
            alerts.push(format!("the immutability service: {a}"));
        }
    }
    // Damage the last verify found (health/<job>.damaged), as the report and the metrics
    // show it: the first command an administrator runs must show it too.
    for j in &jobs {
        let Some((_, lines)) = super::report::recorded_damage(repo.root(), j) else {
            continue;
        };
        for (point, why) in &lines {
            alerts.push(format!(
                "verify found restore point {} of job {j} damaged: {why} (`bulwark-repo verify --job {j}` after a repair; the next backup of the job starts a new chain)",
                point.as_deref().unwrap_or("(unknown)")
            ));
        }
    }
    if json {
        let w: Vec<_> = waiting
            .iter()
            .map(|(n, s)| serde_json::json!({"file": n, "age_seconds": s}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"repository": a.dir, "id": cfg.id, "immutable_days": cfg.immutable_days,
                "immutd_socket": cfg.immutd_socket, "jobs": jobs, "unsealed_files": w,
                "verified_unix": jobs.iter().zip(&verified).map(|(j, v)| (j.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                "synthetic_full_method": match &reflink { Ok(r) if r.is_supported() => "clone", Ok(_) => "copy", Err(_) => "unknown" },
                "reflink_problem": match &reflink { Ok(ReflinkSupport::Unsupported(why)) | Err(why) => Some(why), _ => None },
                "tiers": tiers,
                "immutd": match &immutd {
                    Some(Ok(st)) => serde_json::json!({"answers": true, "trusted_unix": st.trusted_unix,
                        "wall_unix": st.wall_unix, "unlocks_frozen": st.unlocks_frozen, "alert": st.alert,
                        "protection_alerts": st.protection_alerts,
                        "files_locked": st.files_locked, "bytes_locked": st.bytes_locked}),
                    Some(Err(e)) => serde_json::json!({"answers": false, "error": e}),
                    None => serde_json::Value::Null,
                },
                "alerts": alerts})
        );
    } else {
        outln!("repository {} (id {})", a.dir.display(), cfg.id);
        outln!("immutability period: {} days", cfg.immutable_days);
        match &cfg.immutd_socket {
            Some(s) => match &immutd {
                Some(Ok(st)) => outln!(
                    "immutability service: {}, trusted clock {} (wall clock {}), {} files locked",
                    s.display(),
                    bulwark_repository::utc(st.trusted_unix),
                    bulwark_repository::utc(st.wall_unix),
                    st.files_locked
                ),
                _ => outln!("immutability service: {}", s.display()),
            },
            None => outln!("immutability service: NONE — restore points are not immutable"),
        }
        match &reflink {
            Ok(ReflinkSupport::Supported) => {
                outln!("synthetic fulls: clone (the filesystem supports reflink)")
            }
            Ok(ReflinkSupport::Unsupported(why)) => {
                outln!("synthetic fulls: COPY, because {why}; {REFLINK_ADVICE}")
            }
            Err(e) => outln!(
                "synthetic fulls: unknown: the reflink probe could not write in the repository ({e}); is it read-only or full?"
            ),
        }
        outln!(
            "jobs: {}",
            if jobs.is_empty() {
                "none".to_string()
            } else {
                jobs.join(", ")
            }
        );
        for (j, v) in jobs.iter().zip(&verified) {
            outln!(
                "  {j}: last verified {}",
                v.map(bulwark_repository::utc)
                    .unwrap_or_else(|| "never (bulwark-repo verify)".into())
            );
        }
        if tiers.is_empty() {
            outln!("tiers: none (copies to S3 Object Lock storage: `bulwark-tier add`)");
        }
        for t in &tiers {
            outln!("{}", t.line());
        }
        for a in &alerts {
            outln!("ALERT: {a}");
        }
        for (n, s) in &waiting {
            outln!("ALERT: {n} has waited {s}s in incoming/ without being sealed");
        }
    }
    Ok(if waiting.is_empty() && alerts.is_empty() {
        0
    } else {
        1
    })
}
