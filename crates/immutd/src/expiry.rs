//! When each sealed file may be unlocked: one pure function of the ledger (and the current
//! periods), so it is tested exhaustively without a disk.
//!
//! A file's expiry is the latest of:
//! - its own seal time plus the period in force when it was sealed;
//! - the latest own expiry of any file in its chain, i.e. the last seal time in the chain plus
//!   the period (a new incremental extends every file of the chain it depends on, and a chain
//!   unlocks as a whole); for the active chain of a job (the one holding its latest seal) the
//!   last seal plus the current period, when that is longer;
//! - an expiry requested for it (GFS), already capped at seal time plus the maximum period;
//! - the expiry it had before (`floor`): nothing ever shortens an expiry.

use std::collections::HashMap;
use std::path::Path;

use crate::clock::DAY;
use crate::ledger::Entry;

/// The expiry of every entry, in ledger order. `current_period` gives a repository's
/// configured period in days (None for a repository no longer configured).
pub fn expiries(entries: &[Entry], current_period: impl Fn(&Path) -> Option<u32>) -> Vec<i64> {
    // Per chain: the latest own expiry of its files, and its last seal; per job: the chain
    // holding the latest seal (the active one).
    let mut chains: HashMap<(&Path, &str, [u8; 16]), (i64, i64)> = HashMap::new();
    let mut active: HashMap<(&Path, &str), (i64, [u8; 16])> = HashMap::new();
    for e in entries {
        let own = e.sealed.saturating_add(i64::from(e.period_days) * DAY);
        let c = chains
            .entry((e.repo.as_path(), e.job.as_str(), e.chain.0))
            .or_insert((own, e.sealed));
        c.0 = c.0.max(own);
        c.1 = c.1.max(e.sealed);
        let a = active
            .entry((e.repo.as_path(), e.job.as_str()))
            .or_insert((e.sealed, e.chain.0));
        if e.sealed >= a.0 {
            *a = (e.sealed, e.chain.0);
        }
    }
    entries
        .iter()
        .map(|e| {
            let own = e.sealed.saturating_add(i64::from(e.period_days) * DAY);
            let (chain_own, last_sealed) = chains[&(e.repo.as_path(), e.job.as_str(), e.chain.0)];
            let is_active = active[&(e.repo.as_path(), e.job.as_str())].1 == e.chain.0;
            let current = match current_period(&e.repo) {
                Some(p) if is_active => last_sealed.saturating_add(i64::from(p) * DAY),
                _ => i64::MIN,
            };
            own.max(chain_own)
                .max(current)
                .max(e.requested)
                .max(e.floor)
        })
        .collect()
}

/// The expiry a request for `until` gets for a file sealed at `sealed`: capped at the seal
/// time plus the maximum period. Returns the capped value and whether it was capped.
pub fn cap_request(sealed: i64, until: i64, max_period_days: u32) -> (i64, bool) {
    let cap = sealed.saturating_add(i64::from(max_period_days) * DAY);
    if until > cap {
        (cap, true)
    } else {
        (until, false)
    }
}

/// True when a file with this expiry may be unlocked at trusted time `now`.
pub fn is_due(expiry: i64, now: i64, frozen: bool) -> bool {
    !frozen && expiry <= now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::entry;
    use proptest::prelude::*;

    const T0: i64 = 1_800_000_000;

    #[test]
    fn own_period_chain_rule_and_requests() {
        let mut es = vec![
            entry("j", 1, 1, T0, 7),
            entry("j", 1, 2, T0 + 3 * DAY, 7),
            entry("j", 5, 5, T0 + DAY, 7),
        ];
        es[2].requested = T0 + 100 * DAY;
        let x = expiries(&es, |_| Some(7));
        // The incremental sealed 3 days later extends the full.
        assert_eq!(x[0], T0 + 10 * DAY);
        assert_eq!(x[1], T0 + 10 * DAY);
        assert_eq!(x[2], T0 + 100 * DAY);
        assert!(!is_due(x[0], T0 + 10 * DAY - 1, false));
        assert!(is_due(x[0], T0 + 10 * DAY, false));
        assert!(!is_due(x[0], T0 + 20 * DAY, true));
    }

    #[test]
    fn a_longer_period_applies_to_the_active_chain_only_and_a_shorter_one_to_nothing() {
        let es = vec![entry("j", 1, 1, T0, 7), entry("j", 2, 2, T0 + DAY, 7)];
        let x = expiries(&es, |_| Some(30));
        assert_eq!(x[0], T0 + 7 * DAY, "old chain keeps its period");
        assert_eq!(x[1], T0 + 31 * DAY, "active chain takes the longer period");
        let mut es = es;
        for (e, f) in es.iter_mut().zip(&x) {
            e.floor = *f;
        }
        let y = expiries(&es, |_| Some(7));
        assert_eq!(y, x, "lowering the period shortens nothing");
    }

    #[test]
    fn caps() {
        assert_eq!(cap_request(T0, T0 + 10 * DAY, 30), (T0 + 10 * DAY, false));
        assert_eq!(cap_request(T0, T0 + 40 * DAY, 30), (T0 + 30 * DAY, true));
    }

    /// A direct reading of the rules, written independently of [`expiries`].
    fn reference(es: &[Entry], cur: u32) -> Vec<i64> {
        es.iter()
            .map(|e| {
                let mut x = e.sealed + i64::from(e.period_days) * DAY;
                let same_job: Vec<&Entry> = es
                    .iter()
                    .filter(|o| o.repo == e.repo && o.job == e.job)
                    .collect();
                let latest = same_job.iter().map(|o| o.sealed).max().unwrap();
                let active_chain = same_job
                    .iter()
                    .rev()
                    .find(|o| o.sealed == latest)
                    .unwrap()
                    .chain;
                for o in same_job.iter().filter(|o| o.chain == e.chain) {
                    x = x.max(o.sealed + i64::from(o.period_days) * DAY);
                    if e.chain == active_chain {
                        x = x.max(o.sealed + i64::from(cur) * DAY);
                    }
                }
                x.max(e.requested).max(e.floor)
            })
            .collect()
    }

    /// Every ledger of three files over two jobs, two chains, three seal days, two periods
    /// and an optional request, against the reference, for two current periods.
    #[test]
    fn exhaustive_small_ledgers_match_the_reference() {
        let mut choices = vec![];
        for job in 0..2u8 {
            for chain in 0..2u8 {
                for day in 0..3i64 {
                    for period in [7u32, 9] {
                        for req in [0, T0 + 8 * DAY] {
                            choices.push((job, chain, day, period, req));
                        }
                    }
                }
            }
        }
        let mut n = 0;
        for a in &choices {
            for b in &choices {
                for c in &choices {
                    let es: Vec<Entry> = [a, b, c]
                        .iter()
                        .enumerate()
                        .map(|(i, &&(job, chain, day, period, req))| {
                            let mut e = entry(
                                if job == 0 { "a" } else { "b" },
                                chain,
                                i as u8,
                                T0 + day * DAY,
                                period,
                            );
                            e.requested = req;
                            e
                        })
                        .collect();
                    for cur in [7u32, 10] {
                        assert_eq!(
                            expiries(&es, |_| Some(cur)),
                            reference(&es, cur),
                            "{es:?} cur {cur}"
                        );
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 48 * 48 * 48 * 2);
    }

    fn ledger() -> impl Strategy<Value = Vec<Entry>> {
        proptest::collection::vec(
            (
                0u8..3,
                0u8..4,
                0i64..40 * DAY,
                7u32..40,
                prop::option::of(0i64..400 * DAY),
                0i64..60 * DAY,
            ),
            0..12,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (job, chain, t, p, req, floor))| {
                    let mut e = entry(
                        if job == 0 { "a" } else { "b" },
                        chain,
                        i as u8 + 100,
                        T0 + t,
                        p,
                    );
                    e.requested = req.map_or(0, |r| T0 + r);
                    e.floor = if floor > 30 * DAY { T0 + floor } else { 0 };
                    e
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn every_rule_holds_and_nothing_more(es in ledger(), cur in 7u32..40) {
            let x = expiries(&es, |_| Some(cur));
            for (e, &x) in es.iter().zip(&x) {
                let own = e.sealed + i64::from(e.period_days) * DAY;
                prop_assert!(x >= own);
                prop_assert!(x >= e.requested);
                prop_assert!(x >= e.floor);
                let mut terms = vec![own, e.requested, e.floor];
                for o in es.iter().filter(|o| o.repo == e.repo && o.job == e.job && o.chain == e.chain) {
                    let chain_term = o.sealed + i64::from(o.period_days) * DAY;
                    prop_assert!(x >= chain_term, "chain rule");
                    terms.push(chain_term);
                    terms.push(o.sealed + i64::from(cur) * DAY);
                }
                prop_assert!(terms.contains(&x), "expiry {} is none of the rule terms", x);
            }
        }

        #[test]
        fn sealing_more_or_changing_the_period_never_shortens(es in ledger(), more in ledger(), a in 7u32..40, b in 7u32..40) {
            let x = expiries(&es, |_| Some(a));
            let mut es2: Vec<Entry> = es.iter().cloned().zip(&x).map(|(mut e, &f)| { e.floor = f; e }).collect();
            let n = es2.len();
            for mut m in more {
                m.sealed = m.sealed.max(es.iter().map(|e| e.sealed).max().unwrap_or(0));
                es2.push(m);
            }
            let y = expiries(&es2, |_| Some(b));
            for i in 0..n {
                prop_assert!(y[i] >= x[i]);
            }
        }
    }
}
