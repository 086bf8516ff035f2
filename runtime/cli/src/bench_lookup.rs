//! `weir bench q1-lookup`: q1 with each bid's row fetched through async I/O
//! from a stand-in service that answers after a fixed latency (1 ms), so the
//! run measures what `DataStream::async_wait` sustains per subtask with its
//! capacity of requests in flight. The answer is q1's.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir::prelude::*;
use weir_workloads::Bid;

/// The stand-in service's answer latency.
pub const LATENCY: Duration = Duration::from_millis(1);

/// Requests in flight per subtask.
pub const CAPACITY: usize = 100;

/// An answer and when it is due.
type Answer = (Instant, Box<dyn FnOnce() + Send>);

/// A service answering every request `LATENCY` after it was sent, on a thread
/// of its own; with one latency, answers fall due in the order they were asked.
#[derive(Clone)]
struct DelayedService {
    tx: Arc<Mutex<Sender<Answer>>>,
}

impl DelayedService {
    fn start() -> Self {
        let (tx, rx) = channel::<Answer>();
        std::thread::spawn(move || {
            for (due, answer) in rx {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                answer();
            }
        });
        DelayedService { tx: Arc::new(Mutex::new(tx)) }
    }

    fn ask(&self, answer: impl FnOnce() + Send + 'static) {
        let due = Instant::now() + LATENCY;
        // The service thread ends only when every sender is gone.
        let _ = self.tx.lock().unwrap_or_else(|e| e.into_inner()).send((due, Box::new(answer)));
    }
}

/// The q1 rows of `bids`, each fetched from the delayed service.
pub fn q1_rows(bids: DataStream<Bid>, dol: fn(&Bid) -> (i64, i64)) -> DataStream<(i64, i64)> {
    let service = DelayedService::start();
    let options =
        AsyncOptions { capacity: CAPACITY, timeout: Duration::from_secs(30), retries: 0, ..Default::default() };
    bids.async_wait(options, move |b: &Bid, result: ResultFuture<(i64, i64)>| {
        let row = dol(b);
        service.ask(move || result.complete(Ok(vec![row])));
    })
}
