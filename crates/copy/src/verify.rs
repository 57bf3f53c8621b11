//! `bulwark copy --verify`: both sides' restore points compared by root digest, and each
//! side's own verify (every stored block re-read, every file checked against its
//! immutability ledger entry when guarded).

use serde::Serialize;

use crate::{Result, Source, Target};

/// One restore point as the two sides see it.
#[derive(Clone, Debug, Serialize)]
pub struct PointCheck {
    pub source_point: Option<String>,
    pub target_point: Option<String>,
    /// `same`: the target holds it with the source's root digest (verbatim, or a re-chained
    /// copy whose origin record names that digest); `different`: the digests differ;
    /// `missing-on-target`; `only-on-target` (the source no longer holds it).
    pub status: &'static str,
    pub source_root_digest: Option<String>,
    pub target_root_digest: Option<String>,
    /// True for a re-chained copy (its own id and digest on the target).
    pub rechained: bool,
}

/// One job compared.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyJob {
    pub job: String,
    pub points: Vec<PointCheck>,
    /// What each side's verify found damaged (point: problems).
    pub source_damage: Vec<String>,
    pub target_damage: Vec<String>,
    pub same: u64,
    pub different: u64,
    pub missing_on_target: u64,
    pub only_on_target: u64,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyCopies {
    pub from: String,
    pub to: String,
    pub jobs: Vec<VerifyJob>,
}

impl VerifyCopies {
    /// True when a point differs or either side found damage (exit code 1).
    pub fn damaged(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| j.different > 0 || !j.source_damage.is_empty() || !j.target_damage.is_empty())
    }
}

/// Compares `jobs` (all the source's when empty) on both sides.
pub fn verify_copies(
    src: &mut dyn Source,
    dst: &mut dyn Target,
    jobs: &[String],
) -> Result<VerifyCopies> {
    let jobs = if jobs.is_empty() {
        src.jobs()?
    } else {
        jobs.to_vec()
    };
    let mut out = VerifyCopies {
        from: src.describe(),
        to: dst.describe(),
        jobs: Vec::new(),
    };
    for job in jobs {
        let sp = src.points(&job)?;
        let held = dst.held(&job)?;
        let mut vj = VerifyJob {
            job: job.clone(),
            ..Default::default()
        };
        for p in &sp {
            let h = held.iter().find(|h| h.source_point() == p.point);
            let check = match h {
                None => {
                    vj.missing_on_target += 1;
                    PointCheck {
                        source_point: Some(p.point.to_hex()),
                        target_point: None,
                        status: "missing-on-target",
                        source_root_digest: Some(p.root.to_string()),
                        target_root_digest: None,
                        rechained: false,
                    }
                }
                Some(h) => {
                    let same = h.source_root() == p.root;
                    if same {
                        vj.same += 1;
                    } else {
                        vj.different += 1;
                    }
                    PointCheck {
                        source_point: Some(p.point.to_hex()),
                        target_point: Some(h.point.to_hex()),
                        status: if same { "same" } else { "different" },
                        source_root_digest: Some(p.root.to_string()),
                        target_root_digest: Some(h.root.to_string()),
                        rechained: h.origin.is_some(),
                    }
                }
            };
            vj.points.push(check);
        }
        for h in &held {
            if !sp.iter().any(|p| p.point == h.source_point()) {
                vj.only_on_target += 1;
                vj.points.push(PointCheck {
                    source_point: Some(h.source_point().to_hex()),
                    target_point: Some(h.point.to_hex()),
                    status: "only-on-target",
                    source_root_digest: None,
                    target_root_digest: Some(h.root.to_string()),
                    rechained: h.origin.is_some(),
                });
            }
        }
        vj.source_damage = src.verify(&job)?;
        // A target that holds nothing of the job (never copied yet) has nothing to re-read:
        // its points are reported missing-on-target, not an error that stops the comparison.
        if !held.is_empty() {
            vj.target_damage = dst.verify(&job)?;
        }
        out.jobs.push(vj);
    }
    Ok(out)
}
