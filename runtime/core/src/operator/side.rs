//! Side outputs (Flink's `OutputTag`): a process function may send records of
//! any type to a named output beside its main one, for the rows that do not
//! belong in the result (unmatched, late, invalid) but must not be lost.
//!
//! A vertex's side outputs are opt-in and cost nothing until a consumer asks
//! for one ([`crate::graph::JobGraph::add_side_output`]). Then the vertex's
//! output becomes a stream of [`Tagged`] records: its main records, and its
//! side records with their tag and their value encoded (a side output may be
//! consumed in another process). Two kinds of vertices read it: one that keeps
//! the main records ([`SelectMain`]), which every existing and later consumer
//! of the main stream reads from, and one per requested tag ([`SelectSide`]).
//! Watermarks, barriers and the end of input reach every one of them, so a
//! side output is a stream like any other: windows fire on it, and it is
//! exactly-once under checkpoints.
//!
//! Inside the vertex's subtask, functions emit side records through
//! [`SideOutputs`] (reached from their context), and [`MainOutput`], the link
//! after the operator, puts them in the stream before whatever the operator
//! passes on next: records, a watermark or a barrier. A side record therefore
//! never overtakes a barrier or trails a watermark it preceded. A tag nobody
//! consumes costs the encoding of its records only when some other tag of the
//! vertex is consumed; otherwise its records are dropped where they are
//! emitted, as in Flink.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::Operator;
use crate::element::{Barrier, Data, Record};
use crate::error::TaskResult;
use crate::output::{Collector, Output};
use crate::state::codec;
use crate::time::Timestamp;

/// The name of a side output and the type of its records.
pub struct OutputTag<X> {
    name: Arc<str>,
    _x: PhantomData<fn() -> X>,
}

impl<X> OutputTag<X> {
    pub fn new(name: impl AsRef<str>) -> Self {
        OutputTag { name: Arc::from(name.as_ref()), _x: PhantomData }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<X> Clone for OutputTag<X> {
    fn clone(&self) -> Self {
        OutputTag { name: self.name.clone(), _x: PhantomData }
    }
}

impl<X> std::fmt::Debug for OutputTag<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutputTag({:?})", self.name)
    }
}

/// A record of a vertex whose side outputs are consumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tagged<T> {
    Main(T),
    /// A side record: its tag's name and its value, encoded.
    Side {
        tag: String,
        value: Vec<u8>,
    },
}

/// Where a subtask's functions put their side records until the chain passes
/// them on. Detached (the default) when no side output of the vertex is
/// consumed: records emitted then are dropped without being encoded.
#[derive(Clone, Default)]
pub struct SideOutputs(Option<Arc<Mutex<Vec<SideRecord>>>>);

/// A side record waiting in [`SideOutputs`].
struct SideRecord {
    time: Timestamp,
    tag: Arc<str>,
    value: Vec<u8>,
}

impl std::fmt::Debug for SideOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "SideOutputs(attached)" } else { "SideOutputs(detached)" })
    }
}

impl SideOutputs {
    /// Side outputs that are collected (some tag of the vertex is consumed).
    pub(crate) fn attached() -> Self {
        SideOutputs(Some(Arc::default()))
    }

    /// Emits `value` at `time` to the side output `tag`.
    pub fn emit<X: Serialize>(&self, tag: &OutputTag<X>, time: Timestamp, value: &X) {
        if let Some(buffer) = &self.0 {
            let record = SideRecord { time, tag: tag.name.clone(), value: codec::encode(value) };
            buffer.lock().unwrap_or_else(|e| e.into_inner()).push(record);
        }
    }

    fn take<T>(&self) -> Vec<Record<Tagged<T>>> {
        let Some(buffer) = &self.0 else { return Vec::new() };
        let mut buffer = buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.is_empty() {
            return Vec::new();
        }
        buffer.drain(..).map(|r| Record::new(r.time, Tagged::Side { tag: r.tag.to_string(), value: r.value })).collect()
    }
}

/// The link after a vertex's operator when its side outputs are consumed:
/// wraps the main records and puts the side records emitted so far in the
/// stream before anything else passes.
pub(crate) struct MainOutput<T> {
    pub out: Box<dyn Output<Tagged<T>>>,
    pub sides: SideOutputs,
}

impl<T: Send> MainOutput<T> {
    fn pass_sides(&mut self) -> TaskResult {
        let sides = self.sides.take();
        match sides.is_empty() {
            true => Ok(()),
            false => self.out.records(sides),
        }
    }
}

impl<T: Send> Output<T> for MainOutput<T> {
    fn records(&mut self, batch: Vec<Record<T>>) -> TaskResult {
        let mut tagged = self.sides.take();
        tagged.extend(batch.into_iter().map(|r| Record::new(r.time, Tagged::Main(r.value))));
        self.out.records(tagged)
    }
    fn watermark(&mut self, watermark: Timestamp) -> TaskResult {
        self.pass_sides()?;
        self.out.watermark(watermark)
    }
    fn idle(&mut self, idle: bool) -> TaskResult {
        self.pass_sides()?;
        self.out.idle(idle)
    }
    fn barrier(&mut self, barrier: Barrier) -> TaskResult {
        self.pass_sides()?;
        self.out.barrier(barrier)
    }
    fn processing_time(&mut self, now: Timestamp) -> TaskResult {
        self.pass_sides()?;
        self.out.processing_time(now)
    }
    fn flush(&mut self) -> TaskResult {
        self.pass_sides()?;
        self.out.flush()
    }
    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> TaskResult {
        self.out.checkpoint_complete(checkpoint_id)
    }
    fn end(&mut self) -> TaskResult {
        self.pass_sides()?;
        self.out.end()
    }
}

/// Keeps the main records of a [`Tagged`] stream.
pub struct SelectMain<T>(PhantomData<fn() -> T>);

impl<T> Default for SelectMain<T> {
    fn default() -> Self {
        SelectMain(PhantomData)
    }
}

impl<T: Data> Operator for SelectMain<T> {
    type In = Tagged<T>;
    type Out = T;

    fn process_batch(&mut self, batch: Vec<Record<Tagged<T>>>, out: &mut Collector<'_, T>) -> TaskResult {
        let buf = out.buffer();
        buf.extend(batch.into_iter().filter_map(|r| match r.value {
            Tagged::Main(v) => Some(Record::new(r.time, v)),
            Tagged::Side { .. } => None,
        }));
        Ok(())
    }
}

/// Keeps the records of one side output of a [`Tagged`] stream, decoded.
pub struct SelectSide<T, X> {
    tag: OutputTag<X>,
    what: String,
    _t: PhantomData<fn() -> T>,
}

impl<T, X> SelectSide<T, X> {
    pub fn new(tag: OutputTag<X>) -> Self {
        let what = format!("a record of side output `{}`", tag.name());
        SelectSide { tag, what, _t: PhantomData }
    }
}

impl<T: Data, X: Data> Operator for SelectSide<T, X> {
    type In = Tagged<T>;
    type Out = X;

    fn process_batch(&mut self, batch: Vec<Record<Tagged<T>>>, out: &mut Collector<'_, X>) -> TaskResult {
        for r in batch {
            if let Tagged::Side { tag, value } = r.value
                && tag == self.tag.name()
            {
                out.emit(r.time, codec::decode(&value, &self.what)?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what reaches it, control elements as strings.
    #[derive(Default)]
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Output<Tagged<u32>> for Log {
        fn records(&mut self, batch: Vec<Record<Tagged<u32>>>) -> TaskResult {
            let mut log = self.0.lock().unwrap();
            for r in batch {
                log.push(match r.value {
                    Tagged::Main(v) => format!("main {v}@{}", r.time),
                    Tagged::Side { tag, value } => {
                        format!("{tag} {}@{}", codec::decode::<String>(&value, "test").unwrap(), r.time)
                    }
                });
            }
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
            self.0.lock().unwrap().push("end".into());
            Ok(())
        }
    }

    #[test]
    fn side_records_go_out_before_the_next_control_element_and_detached_ones_are_dropped() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sides = SideOutputs::attached();
        let mut main = MainOutput { out: Box::new(Log(log.clone())), sides: sides.clone() };
        let late = OutputTag::<String>::new("late");
        sides.emit(&late, 5, &"a".to_string());
        main.records(vec![Record::new(7, 1u32)]).unwrap();
        sides.emit(&late, 9, &"b".to_string());
        main.watermark(10).unwrap();
        sides.emit(&late, 11, &"c".to_string());
        main.barrier(Barrier { checkpoint_id: 3, triggered_at: 0, is_savepoint: false }).unwrap();
        main.end().unwrap();
        SideOutputs::default().emit(&late, 1, &"dropped".to_string());
        assert_eq!(
            *log.lock().unwrap(),
            ["late a@5", "main 1@7", "late b@9", "watermark 10", "late c@11", "barrier 3", "end"]
        );
    }

    #[test]
    fn selectors_split_the_stream_and_a_damaged_side_value_is_an_error_naming_the_tag() {
        let batch = vec![
            Record::new(1, Tagged::Main(1u32)),
            Record::new(2, Tagged::Side { tag: "late".into(), value: codec::encode(&"x".to_string()) }),
            Record::new(3, Tagged::Side { tag: "other".into(), value: codec::encode(&"y".to_string()) }),
        ];
        let mut buf = Vec::new();
        SelectMain::<u32>::default().process_batch(batch.clone(), &mut Collector::new(&mut buf)).unwrap();
        assert_eq!(buf, vec![Record::new(1, 1u32)]);
        let mut buf = Vec::new();
        let mut side = SelectSide::<u32, String>::new(OutputTag::new("late"));
        side.process_batch(batch, &mut Collector::new(&mut buf)).unwrap();
        assert_eq!(buf, vec![Record::new(2, "x".to_string())]);
        let damaged = vec![Record::new(4, Tagged::Side { tag: "late".into(), value: vec![0xff, 0xff] })];
        let err = side.process_batch(damaged, &mut Collector::new(&mut Vec::new())).unwrap_err();
        assert!(err.to_string().contains("side output `late`"), "{err}");
    }
}
