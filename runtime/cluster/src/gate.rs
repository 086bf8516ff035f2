//! A bound on the connections a listener serves at once: each holds a
//! [`Pass`] (and the thread that serves it) until it ends; beyond the bound a
//! new connection is closed at once, so a flood of connections costs a
//! bounded number of threads and buffers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counts the connections being served.
#[derive(Clone, Debug)]
pub struct Gate {
    live: Arc<AtomicUsize>,
    refused: Arc<AtomicU64>,
    max: usize,
}

/// One connection's place in the gate, given back when dropped.
#[derive(Debug)]
pub struct Pass(Arc<AtomicUsize>);

impl Drop for Pass {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub fn new(max: usize) -> Gate {
        Gate { live: Arc::default(), refused: Arc::default(), max }
    }

    /// A place for one more connection, or the number of connections refused
    /// so far, counting this one (callers log the first and then a few).
    pub fn enter(&self) -> Result<Pass, u64> {
        let mut live = self.live.load(Ordering::Acquire);
        loop {
            if live >= self.max {
                return Err(self.refused.fetch_add(1, Ordering::AcqRel) + 1);
            }
            match self.live.compare_exchange_weak(live, live + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Pass(self.live.clone())),
                Err(now) => live = now,
            }
        }
    }

    /// Connections served now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }
}

/// Whether the `n`th refusal is worth a log line (the 1st, 10th, 100th...).
pub fn worth_logging(n: u64) -> bool {
    n > 0 && 10u64.pow(n.ilog10()) == n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_holds_at_most_its_bound_and_frees_places_as_passes_drop() {
        let gate = Gate::new(2);
        let (a, b) = (gate.enter().unwrap(), gate.enter().unwrap());
        assert_eq!(gate.enter().unwrap_err(), 1);
        assert_eq!(gate.enter().unwrap_err(), 2);
        drop(a);
        let _c = gate.enter().expect("a place again");
        assert_eq!(gate.live(), 2);
        drop(b);
        assert_eq!(gate.live(), 1);
        let logged: Vec<u64> = (1..=1000).filter(|&n| worth_logging(n)).collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
    }
}
