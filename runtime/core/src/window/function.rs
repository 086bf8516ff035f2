//! What a window computes: incremental aggregation, reduction, or a function
//! over all the window's elements.

use std::marker::PhantomData;

use super::Window;
use crate::element::Data;
use crate::operator::co_process::CoInput;

/// Incremental aggregation (Flink's `AggregateFunction`): an accumulator per
/// window, updated per record, merged when session windows merge.
pub trait AggregateFunction<In>: Send + Sync + 'static {
    type Acc: Data;
    type Result;
    fn create(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, value: &In);
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// `other` merged into `acc` and kept: a sliding window's slice is merged
    /// into every window it is part of. Clones `other` unless the function
    /// can merge from a reference (an accumulator that owns an allocation
    /// would be copied once per window and slice).
    fn merge_ref(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        self.merge(acc, other.clone())
    }
    fn result(&self, acc: &Self::Acc) -> Self::Result;
}

/// The per-window state and the emission of a window operator.
pub trait WindowFunction<K, In>: Send + 'static {
    type Acc: Data;
    type Out: Data;
    fn create(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, value: &In);
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// `other` merged into `acc` and kept ([`AggregateFunction::merge_ref`]).
    fn merge_ref(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        self.merge(acc, other.clone())
    }
    fn emit(&mut self, key: &K, window: &Window, acc: &Self::Acc, out: &mut dyn FnMut(Self::Out));
}

/// An [`AggregateFunction`] plus a function building the output row from key, window and result.
#[derive(Clone)]
pub struct AggregateWindow<A, F, Out> {
    pub aggregate: A,
    pub finish: F,
    _out: PhantomData<fn() -> Out>,
}

impl<A, F, Out> AggregateWindow<A, F, Out> {
    pub fn new(aggregate: A, finish: F) -> Self {
        AggregateWindow { aggregate, finish, _out: PhantomData }
    }
}

impl<K, In, A, F, Out> WindowFunction<K, In> for AggregateWindow<A, F, Out>
where
    A: AggregateFunction<In>,
    F: FnMut(&K, &Window, A::Result) -> Out + Send + 'static,
    Out: Data,
{
    type Acc = A::Acc;
    type Out = Out;
    fn create(&self) -> A::Acc {
        self.aggregate.create()
    }
    #[inline]
    fn add(&self, acc: &mut A::Acc, value: &In) {
        self.aggregate.add(acc, value)
    }
    fn merge(&self, acc: &mut A::Acc, other: A::Acc) {
        self.aggregate.merge(acc, other)
    }
    fn merge_ref(&self, acc: &mut A::Acc, other: &A::Acc) {
        self.aggregate.merge_ref(acc, other)
    }
    fn emit(&mut self, key: &K, window: &Window, acc: &A::Acc, out: &mut dyn FnMut(Out)) {
        out((self.finish)(key, window, self.aggregate.result(acc)))
    }
}

/// Keeps one value per window, combining with a reduce function.
#[derive(Clone)]
pub struct ReduceWindow<R, F, Out> {
    pub reduce: R,
    pub finish: F,
    _out: PhantomData<fn() -> Out>,
}

impl<R, F, Out> ReduceWindow<R, F, Out> {
    pub fn new(reduce: R, finish: F) -> Self {
        ReduceWindow { reduce, finish, _out: PhantomData }
    }
}

impl<K, In, R, F, Out> WindowFunction<K, In> for ReduceWindow<R, F, Out>
where
    In: Data,
    R: Fn(In, &In) -> In + Send + 'static,
    F: FnMut(&K, &Window, &In) -> Out + Send + 'static,
    Out: Data,
{
    type Acc = Option<In>;
    type Out = Out;
    fn create(&self) -> Option<In> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<In>, value: &In) {
        *acc = Some(match acc.take() {
            None => value.clone(),
            Some(a) => (self.reduce)(a, value),
        });
    }
    fn merge(&self, acc: &mut Option<In>, other: Option<In>) {
        if let Some(o) = other {
            self.add(acc, &o);
        }
    }
    fn emit(&mut self, key: &K, window: &Window, acc: &Option<In>, out: &mut dyn FnMut(Out)) {
        if let Some(v) = acc {
            out((self.finish)(key, window, v))
        }
    }
}

/// Buffers every element and calls a function over all of them when the window fires.
#[derive(Clone)]
pub struct ProcessWindow<F, Out> {
    pub process: F,
    _out: PhantomData<fn() -> Out>,
}

impl<F, Out> ProcessWindow<F, Out> {
    pub fn new(process: F) -> Self {
        ProcessWindow { process, _out: PhantomData }
    }
}

impl<K, In, F, Out> WindowFunction<K, In> for ProcessWindow<F, Out>
where
    In: Data,
    F: FnMut(&K, &Window, &[In], &mut dyn FnMut(Out)) + Send + 'static,
    Out: Data,
{
    type Acc = Vec<In>;
    type Out = Out;
    fn create(&self) -> Vec<In> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<In>, value: &In) {
        acc.push(value.clone())
    }
    fn merge(&self, acc: &mut Vec<In>, mut other: Vec<In>) {
        acc.append(&mut other)
    }
    fn emit(&mut self, key: &K, window: &Window, acc: &Vec<In>, out: &mut dyn FnMut(Out)) {
        (self.process)(key, window, acc, out)
    }
}

/// The records of both inputs of a window, kept apart (Flink's `coGroup`):
/// `process` gets, per key and window, the first input's records and the
/// second's, either possibly empty (so outer joins can be written), and emits.
#[derive(Clone)]
pub struct CoGroupWindow<F, Out> {
    pub process: F,
    _out: PhantomData<fn() -> Out>,
}

impl<F, Out> CoGroupWindow<F, Out> {
    pub fn new(process: F) -> Self {
        CoGroupWindow { process, _out: PhantomData }
    }
}

impl<K, A, B, F, Out> WindowFunction<K, CoInput<A, B>> for CoGroupWindow<F, Out>
where
    A: Data,
    B: Data,
    F: FnMut(&K, &Window, &[A], &[B], &mut dyn FnMut(Out)) + Send + 'static,
    Out: Data,
{
    type Acc = (Vec<A>, Vec<B>);
    type Out = Out;
    fn create(&self) -> Self::Acc {
        (Vec::new(), Vec::new())
    }
    fn add(&self, acc: &mut Self::Acc, value: &CoInput<A, B>) {
        match value {
            CoInput::First(a) => acc.0.push(a.clone()),
            CoInput::Second(b) => acc.1.push(b.clone()),
        }
    }
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        let (mut a, mut b) = other;
        acc.0.append(&mut a);
        acc.1.append(&mut b);
    }
    fn emit(&mut self, key: &K, window: &Window, acc: &Self::Acc, out: &mut dyn FnMut(Out)) {
        (self.process)(key, window, &acc.0, &acc.1, out)
    }
}
