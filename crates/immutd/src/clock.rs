//! The trusted clock. Wall-clock time is credited only as far as the boot-time clock
//! (`CLOCK_BOOTTIME`, which nobody can set) confirms it, plus a tolerance for honest drift
//! that grows by the same amount per day. A forward jump beyond that is not credited: it
//! freezes every unlock (never a lock) until root accepts the new time.
//!
//! Everything here is pure: readings are passed in, so the decisions are tested without
//! waiting or changing any clock.

/// Seconds per day.
pub const DAY: i64 = 86_400;

/// One reading of the machine's clocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Wall-clock unix seconds (settable by root, NTP, the RTC).
    pub wall: i64,
    /// Seconds since boot, counting suspend (`CLOCK_BOOTTIME`).
    pub boot: i64,
    /// The kernel's boot id; boot readings compare only within one boot.
    pub boot_id: Option<String>,
}

/// Why unlocks are frozen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Wall-clock time the jump was seen.
    pub detected_wall: i64,
    /// Seconds the wall clock advanced beyond what the boot clock and tolerance confirm.
    pub excess_secs: i64,
    pub message: String,
}

/// The persisted clock state: an anchor (where wall and boot time were last agreed), the last
/// checkpoint, and the alert that freezes unlocks, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockState {
    pub boot_id: Option<String>,
    pub anchor_wall: i64,
    pub anchor_boot: i64,
    pub anchor_trusted: i64,
    pub last_wall: i64,
    pub last_boot: i64,
    pub last_trusted: i64,
    pub alert: Option<Alert>,
}

/// What one observation decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Time credited now; expiries are compared with this.
    pub trusted: i64,
    /// A new alert raised by this observation.
    pub new_alert: Option<Alert>,
}

/// Drift allowed over `elapsed` seconds: the tolerance, plus the tolerance per day elapsed.
pub fn allowance(tolerance: i64, elapsed: i64) -> i64 {
    let elapsed = elapsed.max(0);
    tolerance.saturating_add(tolerance.saturating_mul(elapsed) / DAY)
}

fn human(secs: i64) -> String {
    let a = secs.unsigned_abs();
    if a >= 2 * DAY as u64 {
        format!("{} days", a / DAY as u64)
    } else if a >= 7200 {
        format!("{} hours", a / 3600)
    } else {
        format!("{a} seconds")
    }
}

impl ClockState {
    /// A fresh state that trusts the current reading (first start, or `time accept`).
    pub fn accept(r: &Reading) -> ClockState {
        ClockState {
            boot_id: r.boot_id.clone(),
            anchor_wall: r.wall,
            anchor_boot: r.boot,
            anchor_trusted: r.wall,
            last_wall: r.wall,
            last_boot: r.boot,
            last_trusted: r.wall,
            alert: None,
        }
    }

    /// True while unlocks are frozen.
    pub fn frozen(&self) -> bool {
        self.alert.is_some()
    }

    /// Credits a new reading; returns the next state and what was decided.
    pub fn observe(&self, r: &Reading, tolerance: i64) -> (ClockState, Observation) {
        let same_boot =
            self.boot_id.is_some() && self.boot_id == r.boot_id && r.boot >= self.last_boot;
        let mut next = self.clone();
        let mut new_alert = None;
        let trusted;
        if same_boot {
            // The boot clock has run since the anchor: it bounds what may be credited.
            let d_boot = r.boot - self.anchor_boot;
            let d_wall = r.wall.saturating_sub(self.anchor_wall);
            let allow = allowance(tolerance, d_boot);
            let excess = d_wall.saturating_sub(d_boot);
            trusted = self
                .anchor_trusted
                .saturating_add(d_wall.min(d_boot.saturating_add(allow)));
            if excess > allow && self.alert.is_none() {
                new_alert = Some(Alert {
                    detected_wall: r.wall,
                    excess_secs: excess - allow,
                    message: format!(
                        "wall clock jumped forward: it advanced {} more than the boot-time clock confirms (tolerance {}); unlocks are frozen until root runs `bulwark-immutd time accept`",
                        human(excess), human(allow)
                    ),
                });
            }
        } else {
            // Rebooted (or the boot clock is inconsistent): only the time since this boot is
            // proven; the rest of the gap the wall clock shows is credited within tolerance.
            let evidence = if self.boot_id.is_some() && self.boot_id != r.boot_id {
                r.boot.max(0)
            } else {
                0
            };
            let gap = r.wall.saturating_sub(self.last_wall);
            let allow = allowance(tolerance, evidence);
            let credited = gap.min(evidence.saturating_add(allow));
            trusted = self.last_trusted.saturating_add(credited);
            let excess = gap.saturating_sub(evidence);
            if excess > allow && self.alert.is_none() {
                new_alert = Some(Alert {
                    detected_wall: r.wall,
                    excess_secs: excess - allow,
                    message: format!(
                        "since the last checkpoint the wall clock advanced {} but only {} is proven by the boot-time clock (machine off or clock changed, tolerance {}); unlocks are frozen until root runs `bulwark-immutd time accept`",
                        human(gap), human(evidence), human(allow)
                    ),
                });
            }
            next.boot_id = r.boot_id.clone();
            next.anchor_wall = r.wall;
            next.anchor_boot = r.boot;
            next.anchor_trusted = trusted;
        }
        if new_alert.is_some() {
            next.alert = new_alert.clone();
        }
        next.last_wall = r.wall;
        next.last_boot = r.boot;
        next.last_trusted = trusted;
        (next, Observation { trusted, new_alert })
    }

    /// Encodes the state as `key=value` lines.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let mut kv = |k: &str, v: String| {
            s.push_str(k);
            s.push('=');
            s.push_str(&v);
            s.push('\n');
        };
        kv("boot_id", self.boot_id.clone().unwrap_or_default());
        kv("anchor_wall", self.anchor_wall.to_string());
        kv("anchor_boot", self.anchor_boot.to_string());
        kv("anchor_trusted", self.anchor_trusted.to_string());
        kv("last_wall", self.last_wall.to_string());
        kv("last_boot", self.last_boot.to_string());
        kv("last_trusted", self.last_trusted.to_string());
        match &self.alert {
            Some(a) => {
                kv("alert_wall", a.detected_wall.to_string());
                kv("alert_excess", a.excess_secs.to_string());
                kv("alert_message", a.message.replace(['\n', '\r'], " "));
            }
            None => kv("alert_wall", String::new()),
        }
        s
    }

    /// Decodes [`ClockState::encode`] output.
    pub fn decode(text: &str) -> Result<ClockState, String> {
        let mut m = std::collections::BTreeMap::new();
        for l in text.lines() {
            let (k, v) = l.split_once('=').ok_or_else(|| format!("bad line {l:?}"))?;
            m.insert(k, v);
        }
        let get = |k: &str| m.get(k).copied().ok_or_else(|| format!("missing {k}"));
        let int = |k: &str| get(k)?.parse::<i64>().map_err(|_| format!("bad {k}"));
        let boot_id = get("boot_id")?;
        let alert_wall = get("alert_wall")?;
        let alert = if alert_wall.is_empty() {
            None
        } else {
            Some(Alert {
                detected_wall: int("alert_wall")?,
                excess_secs: int("alert_excess")?,
                message: get("alert_message")?.to_string(),
            })
        };
        Ok(ClockState {
            boot_id: (!boot_id.is_empty()).then(|| boot_id.to_string()),
            anchor_wall: int("anchor_wall")?,
            anchor_boot: int("anchor_boot")?,
            anchor_trusted: int("anchor_trusted")?,
            last_wall: int("last_wall")?,
            last_boot: int("last_boot")?,
            last_trusted: int("last_trusted")?,
            alert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_800_000_000;
    const TOL: i64 = 120;

    fn rd(wall: i64, boot: i64, id: &str) -> Reading {
        Reading {
            wall,
            boot,
            boot_id: Some(id.into()),
        }
    }

    /// Feeds readings in order; returns the final state and each credited time.
    fn run(start: &Reading, rs: &[Reading]) -> (ClockState, Vec<i64>) {
        let mut s = ClockState::accept(start);
        let mut out = vec![];
        for r in rs {
            let (n, o) = s.observe(r, TOL);
            s = n;
            out.push(o.trusted);
        }
        (s, out)
    }

    #[test]
    fn honest_time_is_credited() {
        let (s, t) = run(
            &rd(T0, 100, "a"),
            &[
                rd(T0 + 60, 160, "a"),
                rd(T0 + 30 * DAY, 100 + 30 * DAY, "a"),
            ],
        );
        assert_eq!(t, vec![T0 + 60, T0 + 30 * DAY]);
        assert!(!s.frozen());
    }

    #[test]
    fn forward_jumps_while_running_freeze_and_are_not_credited() {
        for jump in [3600, 25 * 3600, 3650 * DAY] {
            let (s, t) = run(
                &rd(T0, 100, "a"),
                &[rd(T0 + 10 + jump, 110, "a"), rd(T0 + 70 + jump, 170, "a")],
            );
            assert!(s.frozen(), "jump {jump}");
            assert!(t[0] <= T0 + 10 + TOL, "jump {jump} credited {}", t[0] - T0);
            assert!(t[1] <= T0 + 70 + TOL);
            assert!(t[1] >= T0 + 70, "boot-confirmed time is still credited");
        }
    }

    #[test]
    fn small_drift_within_tolerance_is_credited_without_alert() {
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + 60 + 100, 160, "a")]);
        assert!(!s.frozen());
        assert_eq!(t[0], T0 + 160);
    }

    #[test]
    fn repeated_small_jumps_cannot_add_up() {
        // Each step jumps 100 s (under the tolerance) within 10 s of boot time.
        let mut rs = vec![];
        for i in 1..=50 {
            rs.push(rd(T0 + i * 110, 100 + i * 10, "a"));
        }
        let (s, t) = run(&rd(T0, 100, "a"), &rs);
        assert!(s.frozen());
        assert!(*t.last().unwrap() <= T0 + 500 + allowance(TOL, 500));
    }

    #[test]
    fn frozen_stays_frozen_until_accept_even_if_the_clock_is_set_back() {
        let (s, _) = run(
            &rd(T0, 100, "a"),
            &[rd(T0 + DAY, 110, "a"), rd(T0 + 20, 120, "a")],
        );
        assert!(s.frozen());
        let s = ClockState::accept(&rd(T0 + DAY, 130, "a"));
        assert!(!s.frozen());
        let (_, o) = s.observe(&rd(T0 + DAY + 10, 140, "a"), TOL);
        assert_eq!(o.trusted, T0 + DAY + 10);
    }

    #[test]
    fn restart_in_the_same_boot_credits_downtime_up_to_the_wall_difference() {
        // Down for 2 days (boot clock confirms), wall shows 1 day: credit 1 day.
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + DAY, 100 + 2 * DAY, "a")]);
        assert!(!s.frozen());
        assert_eq!(t[0], T0 + DAY);
        // Down for 2 days, wall shows 2 days + 25 hours: frozen, 2 days + tolerance credited.
        let (s, t) = run(
            &rd(T0, 100, "a"),
            &[rd(T0 + 2 * DAY + 25 * 3600, 100 + 2 * DAY, "a")],
        );
        assert!(s.frozen());
        assert_eq!(t[0], T0 + 2 * DAY + allowance(TOL, 2 * DAY));
    }

    #[test]
    fn reboot_credits_proven_uptime_within_tolerance_per_day() {
        // Rebooted 10 minutes ago after 5 minutes off: gap 15 min, proven 10 min: within tolerance? no.
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + 900, 600, "b")]);
        assert!(s.frozen());
        assert_eq!(t[0], T0 + 600 + TOL);
        // Rebooted, gap fully explained by the new uptime plus tolerance: no alert.
        let (s, t) = run(
            &rd(T0, 100, "a"),
            &[rd(T0 + 700, 600, "b"), rd(T0 + 800, 700, "b")],
        );
        assert!(!s.frozen());
        assert_eq!(t, vec![T0 + 700, T0 + 800]);
        // A 10-year jump across a reboot.
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + 3650 * DAY, 60, "b")]);
        assert!(s.frozen());
        assert!(t[0] <= T0 + 60 + TOL);
    }

    #[test]
    fn boot_clock_going_backwards_in_one_boot_proves_nothing() {
        let (s, t) = run(&rd(T0, 5000, "a"), &[rd(T0 + 3600, 100, "a")]);
        assert!(s.frozen());
        assert_eq!(t[0], T0 + TOL);
    }

    #[test]
    fn state_round_trips() {
        let (s, _) = run(&rd(T0, 100, "a"), &[rd(T0 + DAY, 110, "a")]);
        assert_eq!(ClockState::decode(&s.encode()).unwrap(), s);
        let s = ClockState::accept(&Reading {
            wall: 5,
            boot: 6,
            boot_id: None,
        });
        assert_eq!(ClockState::decode(&s.encode()).unwrap(), s);
    }

    proptest! {
        /// Whatever the wall clock does, credited time never runs ahead of the anchor plus
        /// boot time plus the allowance, and an uncredited jump always leaves an alert.
        #[test]
        fn never_credits_more_than_boot_time_allows(
            steps in proptest::collection::vec((0i64..4 * DAY, -DAY..40 * DAY), 1..40),
        ) {
            let mut s = ClockState::accept(&rd(T0, 1000, "a"));
            let (mut boot, mut wall) = (1000i64, T0);
            for (db, dw) in steps {
                boot += db;
                wall += dw;
                let (n, o) = s.observe(&rd(wall, boot, "a"), TOL);
                let proven = boot - 1000;
                prop_assert!(o.trusted <= T0 + proven + allowance(TOL, proven));
                prop_assert!(o.trusted <= wall.max(T0 + proven + allowance(TOL, proven)));
                if wall - T0 > proven + allowance(TOL, proven) {
                    prop_assert!(n.frozen());
                }
                s = n;
            }
        }
    }
}
