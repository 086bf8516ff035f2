//! Slot assignment: which TaskManager runs which subtasks. Pure functions.
//!
//! Slots are shared as in Flink's default slot-sharing group: slot `i` of the
//! job holds subtask `i` of every chain, so a job needs as many slots as its
//! highest parallelism. The job runs on the fewest TaskManagers that have
//! the slots, earliest registered first, so that TaskManagers beyond what it
//! needs (the newest, after a scale-down) run nothing and can be removed.
//! Among those, slots are taken in turn (the first slot of each, then the
//! second of each, ...), which spreads the job over them instead of filling
//! the first one.

use std::collections::{BTreeMap, HashSet};

use weir_core::graph::ChainLayout;

/// The slots a job needs.
pub fn slots_needed(layout: &[ChainLayout]) -> usize {
    layout.iter().map(|c| c.parallelism).max().unwrap_or(0)
}

/// Assigns every `(chain, subtask)` to a TaskManager, given each
/// TaskManager's free slots in registration order. `None` when there are too
/// few slots.
pub fn assign<K: Clone + Ord>(
    layout: &[ChainLayout],
    free: &[(K, usize)],
) -> Option<BTreeMap<K, HashSet<(usize, usize)>>> {
    let needed = slots_needed(layout);
    let mut slots: Vec<K> = Vec::with_capacity(needed);
    let mut enough = 0;
    let used = free.iter().take_while(|(_, n)| {
        let short = enough < needed;
        enough += n;
        short
    });
    let free: Vec<(K, usize)> = used.cloned().collect();
    let most = free.iter().map(|(_, n)| *n).max().unwrap_or(0);
    'fill: for round in 0..most {
        for (tm, n) in &free {
            if slots.len() == needed {
                break 'fill;
            }
            if round < *n {
                slots.push(tm.clone());
            }
        }
    }
    if slots.len() < needed {
        return None;
    }
    let mut plan: BTreeMap<K, HashSet<(usize, usize)>> = BTreeMap::new();
    for (c, chain) in layout.iter().enumerate() {
        for (i, tm) in slots.iter().take(chain.parallelism).enumerate() {
            plan.entry(tm.clone()).or_default().insert((c, i));
        }
    }
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(parallelism: usize) -> ChainLayout {
        ChainLayout { vertices: vec![], uids: vec![], parallelism, is_source: false, first_task: 0, inputs: vec![] }
    }

    #[test]
    fn a_job_needs_its_highest_parallelism_in_slots() {
        assert_eq!(slots_needed(&[chain(2), chain(4), chain(1)]), 4);
        assert_eq!(slots_needed(&[]), 0);
    }

    #[test]
    fn slots_are_spread_over_taskmanagers_in_turn() {
        let layout = [chain(4), chain(2)];
        let plan = assign(&layout, &[("a", 2), ("b", 2)]).unwrap();
        assert_eq!(plan["a"], HashSet::from([(0, 0), (0, 2), (1, 0)]));
        assert_eq!(plan["b"], HashSet::from([(0, 1), (0, 3), (1, 1)]));
    }

    #[test]
    fn uneven_taskmanagers_and_too_few_slots() {
        let layout = [chain(3)];
        let plan = assign(&layout, &[("a", 1), ("b", 4)]).unwrap();
        assert_eq!(plan["a"], HashSet::from([(0, 0)]));
        assert_eq!(plan["b"], HashSet::from([(0, 1), (0, 2)]));
        assert!(assign(&layout, &[("a", 1), ("b", 1)]).is_none());
        assert!(assign(&layout, &[] as &[(&str, usize)]).is_none());
    }

    #[test]
    fn taskmanagers_beyond_what_the_job_needs_stay_idle() {
        let plan = assign(&[chain(2), chain(1)], &[("a", 1), ("b", 1), ("c", 1), ("d", 1)]).unwrap();
        assert_eq!(plan.keys().copied().collect::<Vec<_>>(), ["a", "b"], "the earliest registered run the job");
        let plan = assign(&[chain(3)], &[("a", 2), ("b", 2), ("c", 2)]).unwrap();
        assert_eq!(plan["a"], HashSet::from([(0, 0), (0, 2)]));
        assert_eq!((plan["b"].len(), plan.contains_key("c")), (1, false));
    }
}
