//! The trusted clock. Wall-clock time is credited only as far as the boot-time clock
//! (`CLOCK_BOOTTIME`, which nobody can set) confirms it, within a tolerance for honest
//! drift: a fixed number of seconds plus a documented drift rate (parts per million of the
//! boot time elapsed since the anchor), never a share of uptime large enough to hide a jump.
//!
//! - A forward jump beyond that is not credited: it freezes every unlock (never a lock)
//!   until root accepts the new time.
//! - A backward step beyond that is not followed: trusted time keeps running with the boot
//!   clock, so seals (stamped with trusted time) keep their full period. It raises an alert
//!   that freezes nothing and ends by itself once the wall clock is right again.
//! - Trusted time never goes backwards, whatever the wall clock, a reboot or an accept say.
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

/// How much the wall clock may differ from the boot clock without an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance {
    /// Fixed allowance, seconds (`clock_tolerance_secs`).
    pub secs: i64,
    /// Drift allowed per second of boot time, in parts per million (`clock_drift_ppm`).
    pub drift_ppm: i64,
}

impl Tolerance {
    /// Drift allowed over `elapsed` seconds of boot time.
    pub fn allowance(self, elapsed: i64) -> i64 {
        let drift = (elapsed.max(0) as i128 * self.drift_ppm.max(0) as i128) / 1_000_000;
        self.secs
            .saturating_add(i64::try_from(drift).unwrap_or(i64::MAX))
    }
}

/// What kind of clock trouble an alert reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    /// The wall clock ran ahead of what the boot clock proves (or the checkpoint is
    /// missing): unlocks are frozen until root accepts.
    Jump,
    /// The wall clock was set back: trusted time keeps following the boot clock; nothing
    /// is frozen and the alert ends when the wall clock is right again.
    Backward,
}

impl AlertKind {
    fn as_str(self) -> &'static str {
        match self {
            AlertKind::Jump => "jump",
            AlertKind::Backward => "backward",
        }
    }
}

/// A clock alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    /// Wall-clock time the step was seen.
    pub detected_wall: i64,
    /// Seconds the wall clock is off beyond what the boot clock and tolerance confirm.
    pub excess_secs: i64,
    pub message: String,
}

impl Alert {
    /// A forward jump of the wall clock seen at `detected_wall`, `excess_secs` beyond what
    /// the boot clock and tolerance confirm.
    fn jump(detected_wall: i64, excess_secs: i64, message: String) -> Alert {
        Alert {
            kind: AlertKind::Jump,
            detected_wall,
            excess_secs,
            message,
        }
    }
}

/// The persisted clock state: an anchor (where wall and boot time were last agreed), the last
/// checkpoint, the mark (the last reading at which the wall clock was not behind), the last
/// seal stamp, and the alert, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockState {
    pub boot_id: Option<String>,
    pub anchor_wall: i64,
    pub anchor_boot: i64,
    pub anchor_trusted: i64,
    pub last_wall: i64,
    pub last_boot: i64,
    pub last_trusted: i64,
    /// Trusted time and boot reading (in the current boot) when the wall clock was last
    /// not behind: while it is, seals are stamped `mark_trusted + (boot - mark_boot)`.
    pub mark_trusted: i64,
    pub mark_boot: i64,
    /// The latest seal stamp handed out: stamps never go backwards either.
    pub last_stamp: i64,
    pub alert: Option<Alert>,
}

/// What one observation decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Time credited now, never more than the wall clock or the boot clock allows;
    /// expiries are compared with this.
    pub trusted: i64,
    /// The time seals are stamped with now: the trusted time, or, while the wall clock is
    /// set back, the trusted time before the step plus the boot time since. Never earlier
    /// than `trusted`.
    pub stamp: i64,
    /// A new alert raised by this observation.
    pub new_alert: Option<Alert>,
    /// A backward-step alert that ended because the wall clock is right again.
    pub cleared: Option<Alert>,
}

/// A duration for people: days, hours or seconds.
pub fn human(secs: i64) -> String {
    let a = secs.unsigned_abs();
    if a >= 2 * DAY as u64 {
        format!("{} days", a / DAY as u64)
    } else if a >= 7200 {
        format!("{} hours", a / 3600)
    } else {
        format!("{a} seconds")
    }
}

const FIX_FIRST: &str = "fix the clock first (check NTP / chrony and `timedatectl`), then check `bulwark-immutd time preview` and run `bulwark-immutd time accept` only if the new time is right";

impl ClockState {
    /// A fresh state that trusts the current reading (first start).
    pub fn accept(r: &Reading) -> ClockState {
        ClockState {
            boot_id: r.boot_id.clone(),
            anchor_wall: r.wall,
            anchor_boot: r.boot,
            anchor_trusted: r.wall,
            last_wall: r.wall,
            last_boot: r.boot,
            last_trusted: r.wall,
            mark_trusted: r.wall,
            mark_boot: r.boot,
            last_stamp: r.wall,
            alert: None,
        }
    }

    /// The trusted time `time accept` would move to now: the wall clock, but never earlier
    /// than the time already trusted.
    pub fn accepted_time(&self, r: &Reading) -> i64 {
        r.wall.max(self.last_trusted).max(self.last_stamp)
    }

    /// Root's `time accept`: the current wall clock becomes the anchor and any alert ends.
    /// Trusted time does not go backwards: a wall clock behind it is accepted as an offset.
    pub fn accept_now(&self, r: &Reading) -> ClockState {
        let t = self.accepted_time(r);
        ClockState {
            boot_id: r.boot_id.clone(),
            anchor_wall: r.wall,
            anchor_boot: r.boot,
            anchor_trusted: t,
            last_wall: r.wall,
            last_boot: r.boot,
            last_trusted: t,
            mark_trusted: t,
            mark_boot: r.boot,
            last_stamp: self.last_stamp.max(t),
            alert: None,
        }
    }

    /// The alert's text, empty when there is none.
    pub fn alert_message(&self) -> String {
        self.alert
            .as_ref()
            .map(|a| a.message.clone())
            .unwrap_or_default()
    }

    /// True while unlocks are frozen.
    pub fn frozen(&self) -> bool {
        matches!(&self.alert, Some(a) if a.kind == AlertKind::Jump)
    }

    /// Credits a new reading; returns the next state and what was decided. `restarted` is
    /// true for the first reading a newly started service makes of a loaded state.
    pub fn observe(
        &self,
        r: &Reading,
        tol: Tolerance,
        restarted: bool,
    ) -> (ClockState, Observation) {
        let same_boot =
            self.boot_id.is_some() && self.boot_id == r.boot_id && r.boot >= self.last_boot;
        let mut next = self.clone();
        let mut new_alert = None;
        let mut cleared = None;
        let trusted;
        // Seconds the wall clock is behind where it should be (beyond tolerance), if set back.
        let behind;
        // The mark's boot reading, in this boot.
        let mark_boot;
        if same_boot {
            // The boot clock has run since the anchor: it bounds what may be credited.
            let d_boot = r.boot - self.anchor_boot;
            let d_wall = r.wall.saturating_sub(self.anchor_wall);
            let allow = tol.allowance(d_boot);
            let excess = d_wall.saturating_sub(d_boot);
            trusted = self
                .anchor_trusted
                .saturating_add(d_wall.min(d_boot.saturating_add(allow)))
                .max(self.last_trusted);
            behind = if restarted {
                // Across a restart of the service the boot clock's delta includes the
                // service's downtime, during which the wall clock may honestly have been
                // set (and under libfaketime the boot clock itself jumps): the wall clock
                // is set back only if it is behind the time already trusted.
                let so_far = self.last_trusted - self.anchor_trusted;
                (d_wall < so_far.saturating_sub(allow)).then(|| so_far - d_wall)
            } else {
                // While running, the wall clock must keep pace with the boot clock: one
                // that falls behind (set back, or held still step by step) is caught.
                (d_wall < d_boot.saturating_sub(allow)).then(|| d_boot - d_wall)
            };
            mark_boot = self.mark_boot;
            if excess > allow && !self.frozen() {
                let message = format!(
                    "wall clock jumped forward: it advanced {} more than the boot-time clock confirms (tolerance {}); unlocks are frozen; {FIX_FIRST}",
                    human(excess),
                    human(allow)
                );
                new_alert = Some(Alert::jump(r.wall, excess - allow, message));
            }
            if restarted {
                // From the first reading after a start on, both clocks are compared with
                // this one; the anchor's wall is where the wall clock should read now.
                next.anchor_boot = r.boot;
                next.anchor_trusted = trusted;
                next.anchor_wall = self
                    .anchor_wall
                    .saturating_add(trusted - self.anchor_trusted);
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
            let allow = tol.allowance(evidence);
            let backward = gap < evidence.saturating_sub(allow);
            // A clock set back across the reboot (a reset RTC): credit what the boot clock
            // proves and keep the wall clock's expected reading as the anchor, so putting
            // the clock right later is no jump.
            let credited = if backward {
                evidence
            } else {
                gap.min(evidence.saturating_add(allow))
            };
            trusted = self
                .last_trusted
                .saturating_add(credited)
                .max(self.last_trusted);
            behind = backward.then(|| evidence - gap);
            let excess = gap.saturating_sub(evidence);
            if excess > allow && !self.frozen() {
                let message = format!(
                    "since the last checkpoint the wall clock advanced {} but only {} is proven by the boot-time clock (machine off or clock changed, tolerance {}); unlocks are frozen; {FIX_FIRST}",
                    human(gap),
                    human(evidence),
                    human(allow)
                );
                new_alert = Some(Alert::jump(r.wall, excess - allow, message));
            }
            next.boot_id = r.boot_id.clone();
            next.anchor_wall = if backward {
                self.last_wall.saturating_add(credited)
            } else {
                r.wall
            };
            next.anchor_boot = r.boot;
            next.anchor_trusted = trusted;
            // Real time since the mark is at least the time since this boot.
            next.mark_trusted = self.last_stamp.max(self.last_trusted);
            next.mark_boot = r.boot - evidence;
            mark_boot = next.mark_boot;
        }
        let stamp = match behind {
            Some(by) => {
                if self.alert.is_none() && new_alert.is_none() {
                    new_alert = Some(Alert {
                        kind: AlertKind::Backward,
                        detected_wall: r.wall,
                        excess_secs: by,
                        message: format!(
                            "wall clock set back: it is {} behind the trusted clock; seals are stamped by the boot-time clock meanwhile, so no protection is shortened, and nothing unlocks until the wall clock is right again; fix the clock (check NTP / chrony and `timedatectl`); this alert ends by itself then",
                            human(by)
                        ),
                    });
                }
                next.mark_trusted
                    .saturating_add(r.boot.saturating_sub(mark_boot).max(0))
                    .max(trusted)
            }
            None => {
                if matches!(&self.alert, Some(a) if a.kind == AlertKind::Backward) {
                    cleared = self.alert.clone();
                    next.alert = None;
                }
                next.mark_trusted = trusted;
                next.mark_boot = r.boot;
                trusted
            }
        }
        .max(self.last_stamp);
        if new_alert.is_some() {
            next.alert = new_alert.clone();
        }
        next.last_wall = r.wall;
        next.last_boot = r.boot;
        next.last_trusted = trusted;
        next.last_stamp = stamp;
        (
            next,
            Observation {
                trusted,
                stamp,
                new_alert,
                cleared,
            },
        )
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
        kv("mark_trusted", self.mark_trusted.to_string());
        kv("mark_boot", self.mark_boot.to_string());
        kv("last_stamp", self.last_stamp.to_string());
        match &self.alert {
            Some(a) => {
                kv("alert_kind", a.kind.as_str().to_string());
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
        let opt_int = |k: &str, default: &str| {
            if m.contains_key(k) {
                int(k)
            } else {
                int(default)
            }
        };
        let boot_id = get("boot_id")?;
        let alert_wall = get("alert_wall")?;
        let alert = if alert_wall.is_empty() {
            None
        } else {
            // Checkpoints written before backward alerts existed hold only jumps.
            let kind = match m.get("alert_kind").copied() {
                None | Some("jump") => AlertKind::Jump,
                Some("backward") => AlertKind::Backward,
                Some(k) => return Err(format!("bad alert_kind {k:?}")),
            };
            Some(Alert {
                kind,
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
            // Checkpoints written before seal stamps existed: the mark is the last reading.
            mark_trusted: opt_int("mark_trusted", "last_trusted")?,
            mark_boot: opt_int("mark_boot", "last_boot")?,
            last_stamp: opt_int("last_stamp", "last_trusted")?,
            alert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_800_000_000;
    const TOL: Tolerance = Tolerance {
        secs: 120,
        drift_ppm: 20,
    };

    fn rd(wall: i64, boot: i64, id: &str) -> Reading {
        Reading {
            wall,
            boot,
            boot_id: Some(id.into()),
        }
    }

    fn allowance(t: Tolerance, elapsed: i64) -> i64 {
        t.allowance(elapsed)
    }

    /// Feeds readings of a running service in order; returns the final state, each credited
    /// time and each seal stamp.
    fn run_from(
        mut s: ClockState,
        rs: &[Reading],
        restarted: bool,
    ) -> (ClockState, Vec<i64>, Vec<i64>) {
        let (mut t, mut st) = (vec![], vec![]);
        for r in rs {
            let (n, o) = s.observe(r, TOL, restarted);
            assert!(o.stamp >= o.trusted, "a stamp earlier than trusted time");
            s = n;
            t.push(o.trusted);
            st.push(o.stamp);
        }
        (s, t, st)
    }

    fn run(start: &Reading, rs: &[Reading]) -> (ClockState, Vec<i64>) {
        let (s, t, _) = run_from(ClockState::accept(start), rs, false);
        (s, t)
    }

    /// Each reading is the first of a newly started service.
    fn restarts(start: &Reading, rs: &[Reading]) -> (ClockState, Vec<i64>, Vec<i64>) {
        run_from(ClockState::accept(start), rs, true)
    }

    fn kind(s: &ClockState) -> Option<AlertKind> {
        s.alert.as_ref().map(|a| a.kind)
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
        assert!(s.alert.is_none());
    }

    #[test]
    fn forward_jumps_while_running_freeze_and_are_not_credited() {
        for jump in [3600, 25 * 3600, 3650 * DAY] {
            let (s, t) = run(
                &rd(T0, 100, "a"),
                &[rd(T0 + 10 + jump, 110, "a"), rd(T0 + 70 + jump, 170, "a")],
            );
            assert!(s.frozen(), "jump {jump}");
            assert!(
                t[0] <= T0 + 10 + TOL.secs,
                "jump {jump} credited {}",
                t[0] - T0
            );
            assert!(t[1] <= T0 + 70 + TOL.secs);
            assert!(t[1] >= T0 + 70, "boot-confirmed time is still credited");
        }
    }

    #[test]
    fn small_drift_within_tolerance_is_credited_without_alert() {
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + 60 + 100, 160, "a")]);
        assert!(s.alert.is_none());
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
    fn the_allowance_after_a_year_without_accept_is_minutes_not_hours() {
        // The drift rate bounds the silent allowance: a year of uptime allows the fixed
        // tolerance plus 20 ppm (about 10.5 minutes), never half a day.
        let year = 365 * DAY;
        assert!(allowance(TOL, year) < TOL.secs + 11 * 60);
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + year + 3600, 100 + year, "a")]);
        assert!(
            s.frozen(),
            "a silent one-hour jump after a year must freeze"
        );
        assert!(t[0] <= T0 + year + allowance(TOL, year));
        let (s, _) = run(
            &rd(T0, 100, "a"),
            &[rd(T0 + year + 12 * 3600, 100 + year, "a")],
        );
        assert!(
            s.frozen(),
            "the 12-hour jump of the attack report must freeze"
        );
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + year + 300, 100 + year, "a")]);
        assert!(s.alert.is_none(), "5 minutes in a year is honest drift");
        assert_eq!(t[0], T0 + year + 300);
    }

    #[test]
    fn frozen_stays_frozen_until_accept_even_if_the_clock_is_set_back() {
        let (s, _) = run(
            &rd(T0, 100, "a"),
            &[rd(T0 + DAY, 110, "a"), rd(T0 + 20, 120, "a")],
        );
        assert!(s.frozen());
        let s = s.accept_now(&rd(T0 + DAY, 130, "a"));
        assert!(!s.frozen());
        let (_, o) = s.observe(&rd(T0 + DAY + 10, 140, "a"), TOL, false);
        assert_eq!(o.trusted, T0 + DAY + 10);
    }

    #[test]
    fn restart_in_the_same_boot_credits_downtime_up_to_the_wall_difference() {
        // Down for 2 days (boot clock confirms), wall shows 1 day: credit 1 day.
        let (s, t, _) = restarts(&rd(T0, 100, "a"), &[rd(T0 + DAY, 100 + 2 * DAY, "a")]);
        assert!(s.alert.is_none());
        assert_eq!(t[0], T0 + DAY);
        // Down for 2 days, wall shows 2 days + 25 hours: frozen, 2 days + tolerance credited.
        let (s, t, _) = restarts(
            &rd(T0, 100, "a"),
            &[rd(T0 + 2 * DAY + 25 * 3600, 100 + 2 * DAY, "a")],
        );
        assert!(s.frozen());
        assert_eq!(t[0], T0 + 2 * DAY + allowance(TOL, 2 * DAY));
    }

    #[test]
    fn a_boot_clock_that_jumps_across_a_restart_is_not_a_backward_step() {
        // libfaketime moving every clock sets the boot clock to the fake wall time: across a
        // restart it jumps by decades. Honest time is credited as the wall clock shows it,
        // without alert, and the clocks are compared from that reading on.
        let (s, t, st) = restarts(&rd(T0, 500, "a"), &[rd(T0 + 3 * DAY, T0 + 3 * DAY, "a")]);
        assert!(s.alert.is_none(), "{:?}", s.alert);
        assert_eq!((t[0], st[0]), (T0 + 3 * DAY, T0 + 3 * DAY));
        let (s, t, st) = run_from(s, &[rd(T0 + 3 * DAY + 60, T0 + 3 * DAY + 60, "a")], false);
        assert!(s.alert.is_none(), "{:?}", s.alert);
        assert_eq!((t[0], st[0]), (T0 + 3 * DAY + 60, T0 + 3 * DAY + 60));
    }

    #[test]
    fn reboot_credits_proven_uptime_within_tolerance() {
        // Rebooted 10 minutes ago after 5 minutes off: gap 15 min, proven 10 min.
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + 900, 600, "b")]);
        assert!(s.frozen());
        assert_eq!(t[0], T0 + 600 + allowance(TOL, 600));
        // Rebooted, gap fully explained by the new uptime plus tolerance: no alert.
        let (s, t) = run(
            &rd(T0, 100, "a"),
            &[rd(T0 + 700, 600, "b"), rd(T0 + 800, 700, "b")],
        );
        assert!(s.alert.is_none());
        assert_eq!(t, vec![T0 + 700, T0 + 800]);
        // A 10-year jump across a reboot.
        let (s, t) = run(&rd(T0, 100, "a"), &[rd(T0 + 3650 * DAY, 60, "b")]);
        assert!(s.frozen());
        assert!(t[0] <= T0 + 60 + TOL.secs + 1);
    }

    #[test]
    fn boot_clock_going_backwards_in_one_boot_proves_nothing() {
        let (s, t) = run(&rd(T0, 5000, "a"), &[rd(T0 + 3600, 100, "a")]);
        assert!(s.frozen());
        assert_eq!(t[0], T0 + TOL.secs);
    }

    #[test]
    fn backward_step_while_running_stamps_seals_by_the_boot_clock() {
        // The attack of issue 12: the wall clock is set back 1 day, 8 days or a year while
        // the service runs. Trusted time (for unlocks) does not follow it back, and seals
        // are stamped with the time the boot clock proves.
        for back in [DAY, 8 * DAY, 365 * DAY] {
            let (s, t, st) = run_from(
                ClockState::accept(&rd(T0, 100, "a")),
                &[
                    rd(T0 + 60 - back, 160, "a"),
                    rd(T0 + 3600 - back, 3700, "a"),
                ],
                false,
            );
            assert_eq!(t, vec![T0, T0], "back {back}: trusted time went backwards");
            assert_eq!(st, vec![T0 + 60, T0 + 3600], "back {back}");
            assert_eq!(kind(&s), Some(AlertKind::Backward));
            assert!(!s.frozen(), "a backward step freezes nothing");
            assert!(s.alert.as_ref().unwrap().message.contains("set back"));
            // The clock is put right: no jump alert, the backward alert ends, time is true.
            let (n, o) = s.observe(&rd(T0 + 7200, 7300, "a"), TOL, false);
            assert_eq!((o.trusted, o.stamp), (T0 + 7200, T0 + 7200));
            assert!(n.alert.is_none(), "back {back}: {:?}", n.alert);
            assert!(o.cleared.is_some());
        }
    }

    #[test]
    fn a_wall_clock_held_still_is_caught_as_a_backward_step() {
        // Stepped back a little at every check, the wall clock never moves: after the
        // tolerance it is caught, and seal stamps keep following the boot clock (less the
        // tolerance it was allowed to lag before it was caught).
        let rs: Vec<Reading> = (1..=20).map(|i| rd(T0, 100 + i * 60, "a")).collect();
        let (s, t, st) = run_from(ClockState::accept(&rd(T0, 100, "a")), &rs, false);
        assert_eq!(kind(&s), Some(AlertKind::Backward));
        assert_eq!(*t.last().unwrap(), T0);
        assert!(*st.last().unwrap() >= T0 + 20 * 60 - TOL.secs);
    }

    #[test]
    fn backward_step_across_a_restart_stamps_seals_by_the_boot_clock() {
        for back in [DAY, 8 * DAY, 365 * DAY] {
            // Stopped at boot 100 (trusted T0), started 50 s later with the clock set back.
            let (s, t, st) = restarts(&rd(T0, 100, "a"), &[rd(T0 + 50 - back, 150, "a")]);
            assert_eq!(kind(&s), Some(AlertKind::Backward), "back {back}");
            assert_eq!((t[0], st[0]), (T0, T0 + 50));
            // Running on with the clock still wrong.
            let (s, t, st) = run_from(s, &[rd(T0 + 650 - back, 750, "a")], false);
            assert_eq!((t[0], st[0]), (T0, T0 + 650));
            // Put right: no freeze, the alert ends.
            let (s, t, st) = run_from(s, &[rd(T0 + 700, 800, "a")], false);
            assert!(s.alert.is_none(), "back {back}: {:?}", s.alert);
            assert_eq!((t[0], st[0]), (T0 + 700, T0 + 700));
        }
    }

    #[test]
    fn backward_step_across_a_reboot_stamps_seals_by_the_boot_clock() {
        for back in [DAY, 8 * DAY, 365 * DAY] {
            // Rebooted after 60 s off, up 600 s, the clock reads `back` seconds behind.
            let (s, t, st) = restarts(&rd(T0, 100, "a"), &[rd(T0 + 660 - back, 600, "b")]);
            assert_eq!(kind(&s), Some(AlertKind::Backward));
            assert!(t[0] >= T0 + 600 && st[0] >= T0 + 600, "back {back}");
            // Still behind later in the same boot: stamps follow the boot clock.
            let (s, _, st) = run_from(s, &[rd(T0 + 1660 - back, 1600, "b")], false);
            assert_eq!(st[0], T0 + 1600);
            // The clock is put right: no freeze, the alert ends.
            let (s, t, _) = run_from(s, &[rd(T0 + 1760, 1700, "b")], false);
            assert!(s.alert.is_none(), "back {back}: {:?}", s.alert);
            assert!(t[0] >= T0 + 1700 && t[0] <= T0 + 1760);
        }
    }

    #[test]
    fn backward_then_forward_jump_freezes() {
        // Set back 8 days, then forward 30 days from there: net +22 days is a jump.
        let (s, t) = run(
            &rd(T0, 100, "a"),
            &[
                rd(T0 + 10 - 8 * DAY, 110, "a"),
                rd(T0 + 20 + 22 * DAY, 120, "a"),
            ],
        );
        assert!(s.frozen());
        assert!(t[1] <= T0 + 20 + TOL.secs);
        assert!(t[1] >= t[0]);
    }

    #[test]
    fn accept_never_moves_trusted_time_back() {
        let (s, t, st) = run_from(
            ClockState::accept(&rd(T0, 100, "a")),
            &[rd(T0 + 100 - 8 * DAY, 200, "a")],
            false,
        );
        assert_eq!((t[0], st[0]), (T0, T0 + 100));
        let r = rd(T0 + 110 - 8 * DAY, 210, "a");
        assert_eq!(s.accepted_time(&r), T0 + 100);
        let a = s.accept_now(&r);
        assert!(a.alert.is_none());
        assert_eq!(a.last_trusted, T0 + 100);
        // The offset is accepted: time runs on from there without new alerts.
        let (a, o) = a.observe(&rd(T0 + 210 - 8 * DAY, 310, "a"), TOL, false);
        assert!(a.alert.is_none());
        assert_eq!(o.trusted, T0 + 200);
    }

    #[test]
    fn state_round_trips() {
        let (s, _) = run(&rd(T0, 100, "a"), &[rd(T0 + DAY, 110, "a")]);
        assert_eq!(ClockState::decode(&s.encode()).unwrap(), s);
        let (s, _) = run(&rd(T0, 100, "a"), &[rd(T0 - DAY, 110, "a")]);
        assert_eq!(kind(&s), Some(AlertKind::Backward));
        assert_eq!(ClockState::decode(&s.encode()).unwrap(), s);
        let s = ClockState::accept(&Reading {
            wall: 5,
            boot: 6,
            boot_id: None,
        });
        assert_eq!(ClockState::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn checkpoints_of_the_previous_version_still_decode() {
        let (s, _) = run(&rd(T0, 100, "a"), &[rd(T0 + DAY, 110, "a")]);
        let new = ["alert_kind=", "mark_trusted=", "mark_boot=", "last_stamp="];
        let old: String = s
            .encode()
            .lines()
            .filter(|l| !new.iter().any(|k| l.starts_with(k)))
            .map(|l| format!("{l}\n"))
            .collect();
        let d = ClockState::decode(&old).unwrap();
        assert_eq!(kind(&d), Some(AlertKind::Jump));
        assert_eq!(d.last_stamp, s.last_trusted);
        assert_eq!((d.mark_trusted, d.mark_boot), (s.last_trusted, s.last_boot));
    }

    proptest! {
        /// Whatever the wall clock does while the service runs, credited time never runs
        /// ahead of the anchor plus boot time plus the allowance and never goes backwards,
        /// an uncredited jump always freezes unlocks, and seal stamps are never earlier than
        /// what the boot clock proves.
        #[test]
        fn never_credits_more_than_boot_time_allows(
            steps in proptest::collection::vec((0i64..4 * DAY, -40 * DAY..40 * DAY), 1..40),
        ) {
            let mut s = ClockState::accept(&rd(T0, 1000, "a"));
            let (mut boot, mut wall) = (1000i64, T0);
            let (mut last, mut last_stamp) = (T0, T0);
            for (db, dw) in steps {
                boot += db;
                wall += dw;
                let (n, o) = s.observe(&rd(wall, boot, "a"), TOL, false);
                let proven = boot - 1000;
                prop_assert!(o.trusted <= T0 + proven + allowance(TOL, proven));
                prop_assert!(o.trusted >= last, "trusted time went backwards");
                prop_assert!(o.stamp >= last_stamp, "stamps went backwards");
                if wall - T0 > proven + allowance(TOL, proven) {
                    prop_assert!(n.frozen());
                }
                prop_assert!(o.stamp >= T0 + proven - allowance(TOL, proven));
                last = o.trusted;
                last_stamp = o.stamp;
                s = n;
            }
        }

        /// Across reboots and restarts, trusted time and stamps never go backwards.
        #[test]
        fn trusted_time_is_monotonic_across_reboots(
            steps in proptest::collection::vec(
                (0i64..4 * DAY, -400 * DAY..400 * DAY, any::<bool>(), any::<bool>()),
                1..30,
            ),
        ) {
            let mut s = ClockState::accept(&rd(T0, 1000, "a"));
            let (mut boot, mut wall, mut id) = (1000i64, T0, 0u32);
            let (mut last, mut last_stamp) = (T0, T0);
            for (db, dw, reboot, restart) in steps {
                if reboot {
                    id += 1;
                    boot = db % 3600;
                } else {
                    boot += db;
                }
                wall += dw;
                let (n, o) = s.observe(&rd(wall, boot, &id.to_string()), TOL, restart || reboot);
                prop_assert!(o.trusted >= last);
                prop_assert!(o.stamp >= last_stamp);
                prop_assert!(o.stamp >= o.trusted);
                last = o.trusted;
                last_stamp = o.stamp;
                s = ClockState::decode(&n.encode()).unwrap();
            }
        }
    }
}
