//! Timestamp and watermark assignment (Flink's `assignTimestampsAndWatermarks`).
//!
//! Chained right after a source, [`WatermarkAssigner`] stamps each record with
//! its event time and, after each batch, emits the strategy's watermark when it
//! advanced. A source running flat out (batches at least half full) emits one
//! watermark per [`WATERMARK_EVERY`] records instead, the rest on its next tick,
//! flush or barrier: each watermark wakes every task downstream, and one per
//! batch cost more than the records' work (Flink emits them periodically, every
//! 200 ms by default). A source that trickles still emits one after each batch,
//! so lateness stays exact where records can be told apart one by one.
//! Watermarks arriving from upstream are replaced by its own, except the
//! end-of-time watermark of a finished bounded input. With an idle timeout,
//! a subtask that saw no record for that long marks its output idle, so it does
//! not hold back the watermark of the operators downstream.

use std::sync::Arc;

use crate::drift::SourceAlignment;
use crate::element::{Barrier, Record};
use crate::error::TaskResult;
use crate::metrics::SubtaskMetrics;
use crate::output::Output;
use crate::time::{MAX_WATERMARK, Timestamp, WatermarkGenerator, WatermarkStrategy, now_ms};

/// A batch this big means the source is running in bulk.
const BULK_BATCH: usize = 512;

/// While a source runs in bulk, records between its watermarks (at 20 M
/// records a second a watermark still goes out every millisecond).
pub const WATERMARK_EVERY: usize = 16 * 1024;

pub struct WatermarkAssigner<T, F> {
    extract: F,
    generator: WatermarkGenerator,
    idle_timeout_ms: Option<i64>,
    last_record_at: Timestamp,
    idle: bool,
    out: Box<dyn Output<T>>,
    metrics: Arc<SubtaskMetrics>,
    /// The source's alignment group, when the strategy names one.
    alignment: SourceAlignment,
    /// Records handed on since the last watermark went out.
    unsent: usize,
    /// Whether the end-of-time watermark went out.
    ended: bool,
}

impl<T, F: FnMut(&T) -> Timestamp> WatermarkAssigner<T, F> {
    pub fn new(
        strategy: &WatermarkStrategy,
        extract: F,
        out: Box<dyn Output<T>>,
        metrics: Arc<SubtaskMetrics>,
        alignment: &SourceAlignment,
    ) -> Self {
        if let Some(group) = &strategy.alignment {
            alignment.join(group);
        }
        WatermarkAssigner {
            extract,
            generator: strategy.generator(),
            idle_timeout_ms: strategy.idle_timeout.map(|d| d.as_millis() as i64),
            last_record_at: now_ms(),
            idle: false,
            out,
            metrics,
            alignment: alignment.clone(),
            unsent: 0,
            ended: false,
        }
    }

    /// Emits the strategy's watermark if it advanced since the last one (and
    /// the end of time has not gone out: nothing may follow it).
    fn emit(&mut self) -> TaskResult {
        self.unsent = 0;
        if self.ended {
            return Ok(());
        }
        if let Some(wm) = self.generator.advance() {
            self.alignment.publish(wm);
            self.metrics.current_watermark.store(wm, std::sync::atomic::Ordering::Relaxed);
            self.out.watermark(wm)?;
        }
        Ok(())
    }
}

impl<T: Send, F: FnMut(&T) -> Timestamp + Send> Output<T> for WatermarkAssigner<T, F> {
    fn records(&mut self, mut batch: Vec<Record<T>>) -> TaskResult {
        if batch.is_empty() {
            return Ok(());
        }
        if self.idle_timeout_ms.is_some() {
            self.last_record_at = now_ms();
            if self.idle {
                self.idle = false;
                self.alignment.publish(self.generator.current());
                self.out.idle(false)?;
            }
        }
        for r in &mut batch {
            r.time = (self.extract)(&r.value);
            self.generator.observe(r.time);
        }
        let bulk = batch.len() >= BULK_BATCH;
        self.unsent += batch.len();
        self.out.records(batch)?;
        if !bulk || self.unsent >= WATERMARK_EVERY {
            self.emit()?;
        } else if !self.ended {
            // Aligned sources pace by how far each has read, emitted or not.
            self.alignment.publish(self.generator.candidate());
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: Timestamp) -> TaskResult {
        if watermark == MAX_WATERMARK {
            self.ended = true;
            self.alignment.publish(MAX_WATERMARK);
            self.out.watermark(watermark)?;
        }
        Ok(())
    }

    fn idle(&mut self, _idle: bool) -> TaskResult {
        Ok(())
    }

    fn barrier(&mut self, barrier: Barrier) -> TaskResult {
        self.emit()?;
        self.out.barrier(barrier)
    }

    fn processing_time(&mut self, now: Timestamp) -> TaskResult {
        self.emit()?; // what a source in bulk held back (before it may turn idle)
        // A source paused for alignment is not idle: it would publish the end
        // of time, resume, and pause again, and the group would drift apart.
        // Its idle clock starts when the pause ends.
        if self.alignment.ahead() {
            self.last_record_at = now;
        } else if let Some(timeout) = self.idle_timeout_ms
            && !self.idle
            && now - self.last_record_at >= timeout
        {
            self.idle = true;
            // Idle, it holds no aligned source back.
            self.alignment.publish(MAX_WATERMARK);
            self.out.idle(true)?;
        }
        self.out.processing_time(now)
    }

    fn flush(&mut self) -> TaskResult {
        self.emit()?;
        self.out.flush()
    }

    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.out.checkpoint_complete(checkpoint_id)
    }

    fn end(&mut self) -> TaskResult {
        self.out.end()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Counts records and logs watermarks.
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Output<u64> for Log {
        fn records(&mut self, batch: Vec<Record<u64>>) -> TaskResult {
            self.0.lock().unwrap().push(format!("{} records", batch.len()));
            Ok(())
        }
        fn watermark(&mut self, w: Timestamp) -> TaskResult {
            self.0.lock().unwrap().push(format!("watermark {w}"));
            Ok(())
        }
        fn idle(&mut self, _: bool) -> TaskResult {
            Ok(())
        }
        fn barrier(&mut self, b: Barrier) -> TaskResult {
            self.0.lock().unwrap().push(format!("barrier {}", b.checkpoint_id));
            Ok(())
        }
        fn processing_time(&mut self, _: Timestamp) -> TaskResult {
            Ok(())
        }
        fn flush(&mut self) -> TaskResult {
            Ok(())
        }
        fn checkpoint_complete(&mut self, _: u64) -> TaskResult {
            Ok(())
        }
        fn end(&mut self) -> TaskResult {
            Ok(())
        }
    }

    fn assigner(log: &Arc<Mutex<Vec<String>>>) -> WatermarkAssigner<u64, impl FnMut(&u64) -> Timestamp + Send> {
        let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO);
        let out = Box::new(Log(log.clone()));
        WatermarkAssigner::new(&strategy, |v: &u64| *v as Timestamp, out, Default::default(), &Default::default())
    }

    fn batch(values: std::ops::Range<u64>) -> Vec<Record<u64>> {
        values.map(|v| Record::new(0, v)).collect()
    }

    fn take(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    #[test]
    fn a_trickling_source_emits_a_watermark_after_every_batch() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = assigner(&log);
        a.records(batch(10..11)).unwrap();
        a.records(batch(20..23)).unwrap();
        assert_eq!(take(&log), ["1 records", "watermark 9", "3 records", "watermark 21"]);
    }

    #[test]
    fn a_source_in_bulk_emits_one_watermark_per_watermark_every_records_and_the_rest_when_it_pauses() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = assigner(&log);
        let mut next = 0;
        let mut full = |a: &mut WatermarkAssigner<u64, _>| {
            a.records(batch(next..next + 1024)).unwrap();
            next += 1024;
        };
        for _ in 0..WATERMARK_EVERY / 1024 - 1 {
            full(&mut a);
        }
        assert!(take(&log).iter().all(|e| e.ends_with("records")), "no watermark yet");
        full(&mut a);
        assert_eq!(take(&log), ["1024 records", format!("watermark {}", WATERMARK_EVERY - 2).as_str()]);
        full(&mut a);
        a.barrier(Barrier { checkpoint_id: 4, is_savepoint: false, triggered_at: 0 }).unwrap();
        let last = WATERMARK_EVERY + 1024 - 2;
        assert_eq!(take(&log), ["1024 records".to_string(), format!("watermark {last}"), "barrier 4".into()]);
        full(&mut a);
        a.flush().unwrap();
        assert_eq!(take(&log)[1], format!("watermark {}", last + 1024), "a flush (the source waits) sends it");
        full(&mut a);
        a.processing_time(now_ms()).unwrap();
        assert_eq!(take(&log)[1], format!("watermark {}", last + 2048), "so does the next tick");
        a.records(batch(next..next + 10)).unwrap();
        assert_eq!(take(&log), ["10 records".to_string(), format!("watermark {}", next + 8)], "then a trickle");
    }

    #[test]
    fn nothing_follows_the_end_of_time() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = assigner(&log);
        a.records(batch(0..1024)).unwrap(); // in bulk: its watermark waits
        a.watermark(MAX_WATERMARK).unwrap();
        a.flush().unwrap();
        a.processing_time(now_ms()).unwrap();
        a.barrier(Barrier { checkpoint_id: 1, is_savepoint: false, triggered_at: 0 }).unwrap();
        assert_eq!(take(&log), ["1024 records".to_string(), format!("watermark {MAX_WATERMARK}"), "barrier 1".into()]);
    }
}
