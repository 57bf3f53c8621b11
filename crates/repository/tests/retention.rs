//! The retention planner over simulated years, with `now` injected.

use std::collections::BTreeSet;

use bulwark_format::{PointId, PointKind, RetentionClass};
use bulwark_repository::retention::*;
use bulwark_repository::utc;

const DAY: i64 = 86_400;

fn id(n: u64) -> PointId {
    PointId::new(n, [0; 8])
}

fn facts(n: u64, chain: u64, kind: PointKind, created: i64, expiry: Option<i64>) -> PointFacts {
    PointFacts {
        point: id(n),
        chain: id(chain),
        kind,
        created,
        expiry,
    }
}

/// One simulated point: what the repository would know.
#[derive(Clone)]
struct Sim {
    n: u64,
    chain: u64,
    kind: PointKind,
    created: i64,
    class: RetentionClass,
}

/// Daily backups at 22:00 from 2025-01-05 (a Sunday) with a synthetic full every Sunday,
/// retention applied after every backup, immutability 7 days with the chain rule and GFS
/// lifetimes. Returns the points that exist after `days` days; checks invariants daily.
fn simulate(days: i64, policy: &Policy) -> (Vec<Sim>, i64) {
    let period = 7 * DAY;
    let start = 1_736_035_200 + 22 * 3600; // 2025-01-05 22:00 UTC
    assert!(utc(start).starts_with("2025-01-05"));
    let mut live: Vec<Sim> = Vec::new();
    let mut chain = 0;
    let mut now = start;
    for day in 0..=days {
        let t = start + day * DAY;
        let full = day % 7 == 0;
        let n = day as u64 + 1;
        let class = if full {
            let fulls: Vec<i64> = live
                .iter()
                .filter(|s| s.kind.is_full())
                .map(|s| s.created)
                .collect();
            chain = n;
            gfs_class_for_new_full(&fulls, t, policy)
        } else {
            RetentionClass::Regular
        };
        let kind = match (day, full) {
            (0, _) => PointKind::ActiveFull,
            (_, true) => PointKind::SyntheticFull,
            _ => PointKind::Incremental,
        };
        live.push(Sim {
            n,
            chain,
            kind,
            created: t,
            class,
        });
        now = t + 3600;
        let all: Vec<PointFacts> = live
            .iter()
            .map(|s| {
                let chain_last = live
                    .iter()
                    .filter(|o| o.chain == s.chain)
                    .map(|o| o.created)
                    .max()
                    .unwrap();
                let expiry = (s.created + period)
                    .max(chain_last + period)
                    .max(s.created + gfs_lifetime_secs(s.class, policy));
                facts(s.n, s.chain, s.kind, s.created, Some(expiry))
            })
            .collect();
        let marks = plan(&all, policy, now);
        check_invariants(&live, &marks, policy, now);
        let removed: BTreeSet<PointId> = marks
            .iter()
            .filter(|m| !m.keep())
            .map(|m| m.point)
            .collect();
        live.retain(|s| !removed.contains(&id(s.n)));
    }
    (live, now)
}

fn check_invariants(live: &[Sim], marks: &[Mark], policy: &Policy, now: i64) {
    assert_eq!(marks.len(), live.len());
    for m in marks {
        let s = live.iter().find(|s| id(s.n) == m.point).unwrap();
        // Nothing younger than the time floor is removed.
        if now - s.created < i64::from(policy.keep_days) * DAY {
            assert!(m.keep(), "{} removed inside the floor", utc(s.created));
        }
        // Chains are removed whole or kept whole.
        let chain_marks: Vec<bool> = marks
            .iter()
            .filter(|o| o.chain == m.chain)
            .map(|o| o.keep())
            .collect();
        assert!(
            chain_marks.iter().all(|&k| k) || chain_marks.iter().all(|&k| !k),
            "chain split at {}",
            utc(now)
        );
        // Anything still immutable is kept.
        if let Some(KeepReason::Immutable(_)) = m
            .reasons
            .iter()
            .find(|r| matches!(r, KeepReason::Immutable(_)))
        {
            assert!(m.keep());
        }
    }
}

fn date(t: i64) -> String {
    utc(t)[..10].to_string()
}

/// Keep the last `keep_days` days and the last `keep_points` points, no GFS.
fn days_and_points(keep_days: u32, keep_points: u32) -> Policy {
    Policy {
        keep_days,
        keep_points,
        ..Default::default()
    }
}

/// 14 days, 14 points, 4 weekly, 12 monthly and 3 yearly fulls.
fn gfs_14_4_12_3() -> Policy {
    Policy {
        keep_days: 14,
        keep_points: 14,
        weekly: 4,
        monthly: 12,
        yearly: 3,
    }
}

#[test]
fn two_years_of_daily_incrementals_with_weekly_synthetic_fulls_and_gfs_4_12_3() {
    let policy = gfs_14_4_12_3();
    let (live, now) = simulate(730, &policy);
    assert_eq!(date(now), "2027-01-05");
    let fulls: Vec<String> = live
        .iter()
        .filter(|s| s.kind.is_full())
        .map(|s| date(s.created))
        .collect();
    let expected = [
        "2025-01-05", // yearly 2025 (the first backup, an active full)
        "2026-01-04", // yearly 2026
        "2026-02-01",
        "2026-03-01",
        "2026-04-05",
        "2026-05-03",
        "2026-06-07",
        "2026-07-05", // monthly
        "2026-08-02",
        "2026-09-06",
        "2026-10-04",
        "2026-11-01",
        "2026-12-06", //
        "2026-12-13",
        "2026-12-20",
        "2026-12-27", // weekly, and within 14 days
        "2027-01-03", // monthly 2027-01, weekly, within 14 days
    ];
    assert_eq!(fulls, expected);
    // Every kept full keeps its whole chain: 16 complete weeks and the current one (3 days).
    assert_eq!(live.len(), 16 * 7 + 3);
    let classes: Vec<RetentionClass> = live
        .iter()
        .filter(|s| s.kind.is_full())
        .map(|s| s.class)
        .collect();
    assert_eq!(classes[0], RetentionClass::Yearly);
    assert_eq!(classes[1], RetentionClass::Yearly);
    assert_eq!(classes[2], RetentionClass::Monthly);
}

#[test]
fn after_one_year_the_first_full_survives_as_yearly_only() {
    let policy = gfs_14_4_12_3();
    let (live, _) = simulate(400, &policy);
    let fulls: Vec<String> = live
        .iter()
        .filter(|s| s.kind.is_full())
        .map(|s| date(s.created))
        .collect();
    // Now is 2026-02-09: 2025-01-05 is the yearly full; the monthly fulls are those of
    // 2025-03 ... 2026-02; 2025-02-02 is 13 months back and its protection has just ended.
    assert_eq!(fulls.first().unwrap(), "2025-01-05");
    assert!(!fulls.contains(&"2025-01-12".to_string()));
    assert!(!fulls.contains(&"2025-02-02".to_string()), "{fulls:?}");
    assert!(fulls.contains(&"2025-03-02".to_string()));
    let months: BTreeSet<&str> = fulls.iter().map(|d| &d[..7]).collect();
    assert_eq!(months.len(), 13, "{fulls:?}");
}

#[test]
fn retention_ended_but_still_immutable_is_kept_with_that_reason() {
    let policy = days_and_points(1, 1);
    let now = 1_800_000_000;
    let pts = [
        facts(1, 1, PointKind::ActiveFull, now - 30 * DAY, Some(now + DAY)),
        facts(2, 2, PointKind::ActiveFull, now - 10, None),
    ];
    let marks = plan(&pts, &policy, now);
    assert_eq!(marks[0].reasons, vec![KeepReason::Immutable(now + DAY)]);
    assert!(marks[1].keep());
    let later = plan(&pts, &policy, now + 2 * DAY);
    assert!(!later[0].keep(), "removed once immutability has ended");
}

#[test]
fn one_kept_point_keeps_its_whole_chain() {
    let policy = days_and_points(2, 0);
    let now = 1_800_000_000;
    let pts: Vec<PointFacts> = (0..6)
        .map(|i| {
            let kind = if i == 0 {
                PointKind::ActiveFull
            } else {
                PointKind::Incremental
            };
            facts(10 + i, 10, kind, now - (5 - i as i64) * DAY / 2, None)
        })
        .collect();
    let marks = plan(&pts, &policy, now);
    assert!(marks.iter().all(|m| m.keep()));
    assert!(marks[0]
        .reasons
        .contains(&KeepReason::ChainDependency(id(15))));
    assert_eq!(
        marks[5].reasons,
        vec![KeepReason::WithinDays(2), KeepReason::Newest]
    );
    // A newer chain alone within retention: the old chain goes, whole.
    let mut more = pts.clone();
    more.push(facts(
        20,
        20,
        PointKind::ActiveFull,
        now + 5 * DAY - 10,
        None,
    ));
    let marks = plan(&more, &policy, now + 5 * DAY);
    assert!(marks
        .iter()
        .filter(|m| m.chain == id(10))
        .all(|m| !m.keep()));
    assert!(marks.iter().find(|m| m.point == id(20)).unwrap().keep());
}

#[test]
fn count_retention_never_removes_points_younger_than_the_floor() {
    // A flood: 1,000 points in one hour; keep_points is small, the floor keeps them all.
    let policy = days_and_points(7, 3);
    let now = 1_800_000_000;
    let mut pts = vec![facts(1, 1, PointKind::ActiveFull, now - 6 * DAY, None)];
    pts.extend((0..1000).map(|i| {
        facts(
            100 + i,
            100 + i,
            PointKind::ActiveFull,
            now - 3600 + i as i64,
            None,
        )
    }));
    let marks = plan(&pts, &policy, now);
    assert!(
        marks.iter().all(|m| m.keep()),
        "a flood pushed out a point inside the floor"
    );
}

#[test]
fn an_empty_policy_keeps_only_the_newest_chain_and_no_points_is_fine() {
    assert!(plan(&[], &Policy::default(), 0).is_empty());
    let pts = [
        facts(1, 1, PointKind::ActiveFull, 0, None),
        facts(2, 2, PointKind::ActiveFull, DAY, None),
        facts(3, 2, PointKind::Incremental, 2 * DAY, None),
    ];
    let m = plan(&pts, &Policy::default(), 10 * DAY);
    assert!(!m[0].keep(), "an older chain with no reason goes");
    assert_eq!(m[2].reasons, vec![KeepReason::Newest]);
    assert_eq!(m[1].reasons, vec![KeepReason::ChainDependency(id(3))]);
}

/// Backups stopped (a client down for longer than `keep_days`, `keep_points` 0): retention
/// removes the older chains but never the job's last restore point and its chain.
#[test]
fn backups_that_stopped_never_lose_their_last_restore_point() {
    let policy = days_and_points(1, 0);
    let now = 1_800_000_000;
    let pts = [
        facts(1, 1, PointKind::ActiveFull, now - 20 * DAY, None),
        facts(2, 2, PointKind::ActiveFull, now - 10 * DAY, None),
        facts(3, 2, PointKind::Incremental, now - 9 * DAY, None),
    ];
    for later in [0, 30 * DAY, 3650 * DAY] {
        let m = plan(&pts, &policy, now + later);
        assert!(!m[0].keep());
        assert!(m[2].reasons.contains(&KeepReason::Newest), "{:?}", m[2]);
        assert!(m[1].keep(), "the newest point's chain stays whole");
    }
}
