//! Repeats: a condition that lasts (a frozen clock, a full cap) is notified when it starts,
//! then again every `repeat_hours` while it lasts, and once more when it clears is not sent
//! (the journal line says so). The last sending time per (event, subject) is kept in a small
//! JSON file of the notifier's state folder.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::{Event, NotifyError};

/// Largest state file read.
const MAX_STATE: u64 = 1 << 20;
/// Most conditions remembered.
const MAX_ENTRIES: usize = 4096;

/// When each (event, subject) was last sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent(BTreeMap<String, i64>);

fn key(e: Event, subject: &str) -> String {
    format!("{} {subject}", e.as_str())
}

impl Sent {
    /// The state in `path`; empty when missing or unreadable (then a repeat is sent early,
    /// which is the safe side).
    pub fn load(path: &Path) -> Sent {
        use std::io::Read;
        let mut s = String::new();
        let ok = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_STATE).read_to_string(&mut s))
            .is_ok();
        if !ok {
            return Sent::default();
        }
        Sent(serde_json::from_str(&s).unwrap_or_default())
    }

    /// Whether (event, subject) is due at `now`, given the repeat interval in seconds.
    pub fn due(&self, e: Event, subject: &str, now: i64, repeat: i64) -> bool {
        match self.0.get(&key(e, subject)) {
            Some(&t) => now - t >= repeat || now < t,
            None => true,
        }
    }

    /// Records a sending at `now`.
    pub fn mark(&mut self, e: Event, subject: &str, now: i64) {
        self.0.insert(key(e, subject), now);
    }

    /// Forgets every condition not in `active` (they cleared: the next one is news again).
    pub fn retain_active(&mut self, active: &[(Event, String)]) {
        let keep: std::collections::BTreeSet<String> =
            active.iter().map(|(e, s)| key(*e, s)).collect();
        self.0.retain(|k, _| keep.contains(k));
        while self.0.len() > MAX_ENTRIES {
            let first = self.0.keys().next().cloned().expect("not empty");
            self.0.remove(&first);
        }
    }

    /// Writes the state: temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, path: &Path) -> Result<(), NotifyError> {
        let io = |source| NotifyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(".notify-sent.json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(
            serde_json::to_string(&self.0)
                .expect("map serializes")
                .as_bytes(),
        )
        .and_then(|_| f.sync_all())
        .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_condition_repeats_after_the_interval_and_is_news_again_after_it_clears() {
        let mut s = Sent::default();
        let e = Event::ClockFrozen;
        assert!(s.due(e, "repo", 100, 3600));
        s.mark(e, "repo", 100);
        assert!(!s.due(e, "repo", 3699, 3600));
        assert!(s.due(e, "repo", 3700, 3600));
        assert!(s.due(Event::ClockAlert, "repo", 101, 3600));
        // A clock that went back: send rather than stay silent.
        assert!(s.due(e, "repo", 50, 3600));
        s.retain_active(&[]);
        assert!(s.due(e, "repo", 101, 3600));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sent.json");
        s.mark(e, "repo", 7);
        s.save(&p).unwrap();
        assert_eq!(Sent::load(&p), s);
        assert_eq!(Sent::load(&dir.path().join("none")), Sent::default());
    }
}
