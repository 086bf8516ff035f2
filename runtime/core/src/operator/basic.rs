//! Stateless record-at-a-time operators.

use std::marker::PhantomData;

use super::Operator;
use crate::element::{Data, Record};
use crate::error::TaskResult;
use crate::output::Collector;

/// `map`: one output per input.
pub struct Map<In, Out, F> {
    f: F,
    _types: PhantomData<fn(In) -> Out>,
}

impl<In, Out, F> Map<In, Out, F> {
    pub fn new(f: F) -> Self {
        Map { f, _types: PhantomData }
    }
}

impl<In: Data, Out: Data, F: FnMut(In) -> Out + Send + 'static> Operator for Map<In, Out, F> {
    type In = In;
    type Out = Out;
    fn process_batch(&mut self, batch: Vec<Record<In>>, out: &mut Collector<'_, Out>) -> TaskResult {
        let f = &mut self.f;
        out.emit_batch(batch.into_iter().map(|r| Record { time: r.time, value: f(r.value) }).collect());
        Ok(())
    }
}

/// `filter`: keeps the records the predicate accepts.
pub struct Filter<T, F> {
    f: F,
    _types: PhantomData<fn(T)>,
}

impl<T, F> Filter<T, F> {
    pub fn new(f: F) -> Self {
        Filter { f, _types: PhantomData }
    }
}

impl<T: Data, F: FnMut(&T) -> bool + Send + 'static> Operator for Filter<T, F> {
    type In = T;
    type Out = T;
    fn process_batch(&mut self, mut batch: Vec<Record<T>>, out: &mut Collector<'_, T>) -> TaskResult {
        let f = &mut self.f;
        batch.retain(|r| f(&r.value));
        out.emit_batch(batch);
        Ok(())
    }
}

/// `flat_map`: zero or more outputs per input, each with the input's timestamp.
pub struct FlatMap<In, Out, I, F> {
    f: F,
    _types: PhantomData<fn(In) -> (Out, I)>,
}

impl<In, Out, I, F> FlatMap<In, Out, I, F> {
    pub fn new(f: F) -> Self {
        FlatMap { f, _types: PhantomData }
    }
}

impl<In, Out, I, F> Operator for FlatMap<In, Out, I, F>
where
    In: Data,
    Out: Data,
    I: IntoIterator<Item = Out> + 'static,
    F: FnMut(In) -> I + Send + 'static,
{
    type In = In;
    type Out = Out;
    fn process_batch(&mut self, batch: Vec<Record<In>>, out: &mut Collector<'_, Out>) -> TaskResult {
        for r in batch {
            for v in (self.f)(r.value) {
                out.emit(r.time, v);
            }
        }
        Ok(())
    }
}
