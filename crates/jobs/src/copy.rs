//! `[copy]`: a backup copy job (docs/copy-jobs.md). The job file's `repository` is the source;
//! the table names the target, the jobs to copy and a bandwidth limit:
//!
//! ```toml
//! name = "offsite"
//! repository = "/srv/bulwark/repo"      # the source: a folder or HOST:PORT
//! [copy]
//! to = "offsite.example:6162"           # the target: a folder or HOST:PORT
//! jobs = ["web01", "db01.root"]         # default: every job of the source
//! bwlimit = "20M"                       # bytes per second, optional
//! ```

use serde::Deserialize;

/// The `[copy]` table of a job file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySpec {
    /// The target repository: a folder on this machine or `HOST:PORT` of a repository service
    /// this machine is enrolled with.
    pub to: String,
    /// Repository jobs to copy; empty: every job of the source.
    #[serde(default)]
    pub jobs: Vec<String>,
    /// At most this many bytes per second, e.g. "20M", "512K".
    pub bwlimit: Option<String>,
}

impl CopySpec {
    /// Checks the table: a target, valid job names, a readable rate.
    pub fn check(&self, source: &str) -> Result<(), String> {
        let to = self.to.trim();
        if to.is_empty() {
            return Err("[copy] to is empty: give the target folder or HOST:PORT".into());
        }
        if to == source.trim() {
            return Err(
                "[copy] to names the job's own repository; a copy needs a second one".into(),
            );
        }
        crate::unique_job_names("[copy] jobs", &self.jobs)?;
        self.rate()?;
        Ok(())
    }

    /// The bandwidth limit in bytes per second.
    pub fn rate(&self) -> Result<Option<u64>, String> {
        let Some(s) = self.bwlimit.as_deref() else {
            return Ok(None);
        };
        let (num, mult) = rate_parts(s);
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .filter(|v| *v > 0)
            .map(Some)
            .ok_or_else(|| format!("[copy] bwlimit {s:?} is not a rate like 512K, 20M or 1G"))
    }
}

/// A rate's number and the multiplier of its unit: `20M` is ("20", 1 MiB); K, M and G
/// (either case) are powers of 1024, no unit is bytes. Surrounding blanks are ignored.
pub fn rate_parts(s: &str) -> (&str, u64) {
    let t = s.trim();
    match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(to: &str, jobs: &[&str], bw: Option<&str>) -> CopySpec {
        CopySpec {
            to: to.into(),
            jobs: jobs.iter().map(|s| s.to_string()).collect(),
            bwlimit: bw.map(str::to_string),
        }
    }

    #[test]
    fn a_copy_table_needs_a_second_repository_valid_names_and_a_rate() {
        assert!(spec("b:6162", &["web01"], Some("20M"))
            .check("/srv/a")
            .is_ok());
        assert_eq!(spec("b:6162", &[], Some("20M")).rate(), Ok(Some(20 << 20)));
        assert_eq!(spec("b:6162", &[], None).rate(), Ok(None));
        assert!(spec("", &[], None).check("/srv/a").is_err());
        assert!(spec("/srv/a", &[], None).check("/srv/a").is_err());
        assert!(spec("b:6162", &["../etc"], None).check("/srv/a").is_err());
        assert!(spec("b:6162", &[], Some("fast")).check("/srv/a").is_err());
        assert!(spec("b:6162", &[], Some("0")).check("/srv/a").is_err());
    }

    #[test]
    fn a_copy_job_file_is_a_copy_kind_and_copies_only() {
        let j = crate::JobFile::parse(
            "name = \"offsite\"\nrepository = \"/srv/a\"\n[copy]\nto = \"b:6162\"\njobs = [\"web01\"]\nbwlimit = \"1M\"\n",
        )
        .unwrap();
        assert!(
            matches!(j.kind(), crate::JobKind::Copy(c) if c.jobs == ["web01"] && c.to == "b:6162")
        );
        for bad in [
            "name = \"x\"\nrepository = \"/srv/a\"\nsource = \"/dev/sda\"\n[copy]\nto = \"b:6162\"\n",
            "name = \"x\"\nrepository = \"/srv/a\"\n[copy]\nto = \"/srv/a\"\n",
            "name = \"x\"\nrepository = \"/srv/a\"\n[copy]\nto = \"b:6162\"\nspeed = 1\n",
            "name = \"x\"\nrepository = \"/srv/a\"\n[verify]\n[copy]\nto = \"b:6162\"\n",
        ] {
            assert!(crate::JobFile::parse(bad).is_err(), "{bad}");
        }
    }
}
