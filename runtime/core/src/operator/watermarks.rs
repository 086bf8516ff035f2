//! Timestamp and watermark assignment (Flink's `assignTimestampsAndWatermarks`).
//!
//! Chained right after a source, [`WatermarkAssigner`] stamps each record with
//! its event time and, after each batch, emits the strategy's watermark when it
//! advanced. Watermarks arriving from upstream are replaced by its own, except
//! the end-of-time watermark of a finished bounded input. With an idle timeout,
//! a subtask that saw no record for that long marks its output idle, so it does
//! not hold back the watermark of the operators downstream.

use std::sync::Arc;

use crate::drift::SourceAlignment;
use crate::element::{Barrier, Record};
use crate::error::TaskResult;
use crate::metrics::SubtaskMetrics;
use crate::output::Output;
use crate::time::{MAX_WATERMARK, Timestamp, WatermarkGenerator, WatermarkStrategy, now_ms};

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
        }
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
        self.out.records(batch)?;
        if let Some(wm) = self.generator.advance() {
            self.alignment.publish(wm);
            self.metrics.current_watermark.store(wm, std::sync::atomic::Ordering::Relaxed);
            self.out.watermark(wm)?;
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: Timestamp) -> TaskResult {
        if watermark == MAX_WATERMARK {
            self.alignment.publish(MAX_WATERMARK);
            self.out.watermark(watermark)?;
        }
        Ok(())
    }

    fn idle(&mut self, _idle: bool) -> TaskResult {
        Ok(())
    }

    fn barrier(&mut self, barrier: Barrier) -> TaskResult {
        self.out.barrier(barrier)
    }

    fn processing_time(&mut self, now: Timestamp) -> TaskResult {
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
        self.out.flush()
    }

    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.out.checkpoint_complete(checkpoint_id)
    }

    fn end(&mut self) -> TaskResult {
        self.out.end()
    }
}
