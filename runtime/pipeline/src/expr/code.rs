//! Expressions compiled once into closures specialised by type.
//!
//! The tree walk ([`super::eval`]) builds a [`Value`] for every node of every
//! row and matches on it at the next node. Types are known once an
//! expression is checked, so each node here is compiled to a closure over
//! unboxed `i64`, `f64` or `bool` results (`None` is null), and operands that
//! are fields or literals are read in place rather than called ([`Arg`]).
//! Measured on q1 (`trunc(price * 0.908)`), see docs/benchmarks.md.
//!
//! Semantics are the tree walk's, exactly: integer arithmetic wraps, division
//! or remainder by zero and any null operand give null, a run of operators
//! switches from integer to float arithmetic where its type does, `and` and
//! `or` short-circuit, floats compare by their total order. Strings and the
//! functions over them are left to the tree walk ([`Code::Value`]); the test
//! below checks both agree on random expressions and rows.
//!
//! A run of operators of one precedence is one closure with a loop, as in
//! the tree walk, so evaluating recurses no deeper than the expression nests.
//! A single operator (`price * 0.908`, `auction % 123 == 0`) is a closure of
//! its own per operator, its literal operand captured as a number.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use super::{BinOp, Func, Node, bin_type, eval, type_of};
use crate::value::{FieldType, Row, Schema, Value};

type Fun<T> = Arc<dyn Fn(&Row) -> Option<T> + Send + Sync>;
type ValueFun = Arc<dyn Fn(&Row) -> Value + Send + Sync>;

/// An unboxed result type, and how a field's value reads as it.
pub(super) trait Prim: Copy + Send + Sync + 'static {
    fn read(v: &Value) -> Option<Self>;
}

impl Prim for i64 {
    #[inline]
    fn read(v: &Value) -> Option<i64> {
        v.as_int()
    }
}

impl Prim for f64 {
    /// Integers widen, as in the tree walk's mixed arithmetic.
    #[inline]
    fn read(v: &Value) -> Option<f64> {
        v.as_f64()
    }
}

impl Prim for bool {
    #[inline]
    fn read(v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// An operand: a literal or a field is read in place, anything else called.
#[derive(Clone)]
pub(super) enum Arg<T> {
    Lit(Option<T>),
    Field(usize),
    Code(Fun<T>),
}

impl<T: Prim> Arg<T> {
    #[inline]
    fn get(&self, row: &Row) -> Option<T> {
        match self {
            Arg::Lit(v) => *v,
            Arg::Field(i) => T::read(&row[*i]),
            Arg::Code(f) => f(row),
        }
    }

    fn code(f: impl Fn(&Row) -> Option<T> + Send + Sync + 'static) -> Arg<T> {
        Arg::Code(Arc::new(f))
    }

    /// `f` of this operand's value (null stays null).
    fn map<U: Prim>(self, f: impl Fn(T) -> Option<U> + Send + Sync + 'static) -> Arg<U> {
        match self {
            Arg::Lit(v) => Arg::Lit(v.and_then(f)),
            a => Arg::code(move |row| a.get(row).and_then(&f)),
        }
    }
}

/// A compiled expression, by its result type.
#[derive(Clone)]
pub(super) enum Code {
    Int(Arg<i64>),
    Float(Arg<f64>),
    Bool(Arg<bool>),
    /// A field of a type its values need no conversion to (not float,
    /// whose reads widen integers): the value cloned as it is, inline at the
    /// caller ([`super::Expr::eval`]). Returned from a call instead, a value
    /// is written through the stack a byte of tag and a word of payload at
    /// a time and read back in one wider load, which stalls: that was 22 %
    /// of q0's CPU through its pipeline file (a `select` of two fields).
    Field(usize),
    /// Strings, and expressions that are always null: the tree walk.
    Value(ValueFun),
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Code::Int(_) => "Code::Int",
            Code::Float(_) => "Code::Float",
            Code::Bool(_) => "Code::Bool",
            Code::Field(_) => "Code::Field",
            Code::Value(_) => "Code::Value",
        })
    }
}

impl Code {
    /// Compiles a checked expression's tree.
    pub(super) fn compile(node: &Node, schema: &Schema) -> Code {
        let ty = type_of(node, schema);
        if let Node::Field(i) = node
            && ty != Some(FieldType::Float)
        {
            return Code::Field(*i);
        }
        match ty {
            Some(FieldType::Int) => Code::Int(int(node, schema)),
            Some(FieldType::Float) => Code::Float(float(node, schema)),
            Some(FieldType::Bool) => Code::Bool(boolean(node, schema)),
            Some(FieldType::String) | None => Code::Value(walk(node)),
        }
    }

    #[inline]
    pub(super) fn eval(&self, row: &Row) -> Value {
        match self {
            Code::Int(a) => a.get(row).map_or(Value::Null, Value::Int),
            Code::Float(a) => a.get(row).map_or(Value::Null, Value::Float),
            Code::Bool(a) => a.get(row).map_or(Value::Null, Value::Bool),
            Code::Field(i) => row[*i].clone(),
            Code::Value(f) => f(row),
        }
    }

    /// As [`Code::eval`], the value pushed onto `out`: written where it
    /// stays, not returned through the stack (see [`Code::Field`]).
    pub(super) fn eval_into(&self, row: &Row, out: &mut Row) {
        // A value made before `push` makes room (a call, on its cold path)
        // is kept in a stack slot across it and copied from there: the
        // stall again. Made after the room is, it is written in place.
        match self {
            Code::Int(a) => match a.get(row) {
                Some(x) => push_made(out, || Value::Int(x)),
                None => push_made(out, || Value::Null),
            },
            Code::Float(a) => match a.get(row) {
                Some(x) => push_made(out, || Value::Float(x)),
                None => push_made(out, || Value::Null),
            },
            Code::Bool(a) => match a.get(row) {
                Some(x) => push_made(out, || Value::Bool(x)),
                None => push_made(out, || Value::Null),
            },
            Code::Field(i) => out.push(row[*i].clone()),
            Code::Value(f) => out.push(f(row)),
        }
    }

    /// True only for a true result.
    #[inline]
    pub(super) fn matches(&self, row: &Row) -> bool {
        match self {
            Code::Bool(a) => a.get(row) == Some(true),
            other => matches!(other.eval(row), Value::Bool(true)),
        }
    }
}

/// Appends the value `make` makes to `row`, made once there is room for it.
#[inline(always)]
fn push_made(row: &mut Row, make: impl FnOnce() -> Value) {
    row.reserve(1);
    let len = row.len();
    row.spare_capacity_mut()[0].write(make());
    // SAFETY: the slot just past the length was written on the line above.
    unsafe { row.set_len(len + 1) };
}

/// The tree walk over `node`.
fn walk(node: &Node) -> ValueFun {
    let node = node.clone();
    Arc::new(move |row| eval(&node, row))
}

/// The tree walk's result read as `T`.
fn walked<T: Prim>(node: &Node) -> Arg<T> {
    let f = walk(node);
    Arg::code(move |row| T::read(&f(row)))
}

/// An expression of type int (or always null).
fn int(node: &Node, schema: &Schema) -> Arg<i64> {
    match node {
        Node::Field(i) => Arg::Field(*i),
        Node::Lit(v) => Arg::Lit(v.as_int()),
        Node::Neg(n) => int(n, schema).map(|x: i64| Some(x.wrapping_neg())),
        Node::Chain(first, rest) if is_arithmetic(rest) => {
            let first = int(first, schema);
            let rest = rest.iter().map(|(op, n)| (*op, int(n, schema))).collect();
            chain(first, rest, int_op)
        }
        Node::Call(f, args) => {
            let arg_type = type_of(&args[0], schema);
            match (f, arg_type) {
                (Func::Trunc | Func::Floor | Func::Ceil | Func::Round | Func::Int, Some(FieldType::Int)) => {
                    int(&args[0], schema)
                }
                (Func::Trunc | Func::Int, Some(FieldType::Float)) => float_then(&args[0], schema, |x| Some(x as i64)),
                (Func::Floor, Some(FieldType::Float)) => float_then(&args[0], schema, |x| Some(x.floor() as i64)),
                (Func::Ceil, Some(FieldType::Float)) => float_then(&args[0], schema, |x| Some(x.ceil() as i64)),
                (Func::Round, Some(FieldType::Float)) => float_then(&args[0], schema, |x| Some(x.round() as i64)),
                (Func::Abs, Some(FieldType::Int)) => int(&args[0], schema).map(|x: i64| Some(x.wrapping_abs())),
                (Func::If, _) => choose(boolean(&args[0], schema), int(&args[1], schema), int(&args[2], schema)),
                _ => walked(node),
            }
        }
        _ => walked(node),
    }
}

/// An expression of type float, or int widened to float (or always null).
fn float(node: &Node, schema: &Schema) -> Arg<f64> {
    if type_of(node, schema) == Some(FieldType::Int) {
        return match int(node, schema) {
            Arg::Lit(v) => Arg::Lit(v.map(|x| x as f64)),
            // f64's read widens the field's integer.
            Arg::Field(i) => Arg::Field(i),
            a => a.map(|x| Some(x as f64)),
        };
    }
    match node {
        Node::Field(i) => Arg::Field(*i),
        Node::Lit(v) => Arg::Lit(v.as_f64()),
        Node::Neg(n) => float(n, schema).map(|x: f64| Some(-x)),
        Node::Chain(first, rest) if is_arithmetic(rest) => float_chain(first, rest, schema, Some),
        Node::Call(Func::Abs, args) => float(&args[0], schema).map(|x: f64| Some(x.abs())),
        Node::Call(Func::Float, args) if type_of(&args[0], schema).is_some_and(FieldType::is_numeric) => {
            float(&args[0], schema)
        }
        Node::Call(Func::If, args) => {
            choose(boolean(&args[0], schema), float(&args[1], schema), float(&args[2], schema))
        }
        _ => walked(node),
    }
}

/// `then` of a float expression's value (null stays null). A run of
/// arithmetic takes `then` into its own closure, one call where mapping its
/// result would make two (q1's `trunc(price * 0.908)`).
fn float_then<U: Prim>(node: &Node, schema: &Schema, then: impl Then<f64, U>) -> Arg<U> {
    match node {
        Node::Chain(first, rest) if is_arithmetic(rest) && type_of(node, schema) == Some(FieldType::Float) => {
            float_chain(first, rest, schema, then)
        }
        _ => float(node, schema).map(then),
    }
}

/// What a run applies to its result: a function item or a closure without
/// captures, inlined into the run's closure.
trait Then<T, U>: Fn(T) -> Option<U> + Copy + Send + Sync + 'static {}

impl<T, U, F: Fn(T) -> Option<U> + Copy + Send + Sync + 'static> Then<T, U> for F {}

/// A run of `+ - * / %` that is float overall, and `then` of its value: its
/// integer prefix (up to the operand that makes it float) in integer
/// arithmetic, then the rest in float.
fn float_chain<U: Prim>(first: &Node, rest: &[(BinOp, Node)], schema: &Schema, then: impl Then<f64, U>) -> Arg<U> {
    let mut ty = type_of(first, schema);
    let mut split = 0;
    while ty != Some(FieldType::Float) && split < rest.len() {
        let (op, n) = &rest[split];
        ty = bin_type(*op, ty, type_of(n, schema)).expect("type-checked when parsed");
        if ty != Some(FieldType::Float) {
            split += 1;
        }
    }
    let head = match split {
        0 => float(first, schema),
        _ => {
            let (first, prefix) = (int(first, schema), rest[..split].iter().map(|(op, n)| (*op, int(n, schema))));
            chain_then(first, prefix.collect(), int_op, |x| Some(x as f64))
        }
    };
    let tail = rest[split..].iter().map(|(op, n)| (*op, float(n, schema))).collect();
    chain_then(head, tail, float_op, then)
}

/// An expression of type bool (or always null).
fn boolean(node: &Node, schema: &Schema) -> Arg<bool> {
    match node {
        Node::Field(i) => Arg::Field(*i),
        Node::Lit(v) => Arg::Lit(bool::read(v)),
        Node::Not(n) => boolean(n, schema).map(|b: bool| Some(!b)),
        Node::Chain(first, rest) if rest.iter().all(|(op, _)| matches!(op, BinOp::And | BinOp::Or)) => {
            let first = boolean(first, schema);
            let rest: Vec<(BinOp, Arg<bool>)> = rest.iter().map(|(op, n)| (*op, boolean(n, schema))).collect();
            Arg::code(move |row| {
                rest.iter().fold(first.get(row), |left, (op, right)| match (op, left) {
                    (BinOp::And, Some(false)) => Some(false),
                    (BinOp::Or, Some(true)) => Some(true),
                    (_, Some(_)) => right.get(row),
                    (_, None) => None,
                })
            })
        }
        Node::Chain(first, rest) if rest.len() == 1 => comparison(node, first, rest[0].0, &rest[0].1, schema),
        Node::Call(Func::If, args) => {
            choose(boolean(&args[0], schema), boolean(&args[1], schema), boolean(&args[2], schema))
        }
        _ => walked(node),
    }
}

/// `node`, which is `left op right`, for a comparison, by the operands' types.
fn comparison(node: &Node, left: &Node, op: BinOp, right: &Node, schema: &Schema) -> Arg<bool> {
    use FieldType::*;
    if !matches!(op, BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge) {
        // Arithmetic on nulls in a boolean place (`if(null + null, ..)`): the tree walk.
        return walked(node);
    }
    match (type_of(left, schema), type_of(right, schema)) {
        (Some(Int), Some(Int)) => compared(int(left, schema), op, int(right, schema), i64::cmp),
        (Some(a), Some(b)) if a.is_numeric() && b.is_numeric() => {
            compared(float(left, schema), op, float(right, schema), f64::total_cmp)
        }
        (Some(Bool), Some(Bool)) => compared(boolean(left, schema), op, boolean(right, schema), bool::cmp),
        // Strings: a field against a literal, the common filter, without copying either.
        (Some(String), Some(String)) => match (left, right) {
            (Node::Field(i), Node::Lit(Value::Str(s))) => {
                let (i, s) = (*i, s.clone());
                Arg::code(move |row| match &row[i] {
                    Value::Str(v) => Some(holds(op, v.as_str().cmp(s.as_str()))),
                    _ => None,
                })
            }
            _ => walked(node),
        },
        // A null operand: always null.
        _ => Arg::Lit(None),
    }
}

/// Whether `o` is what comparison `op` asks for.
#[inline(always)]
fn holds(op: BinOp, o: Ordering) -> bool {
    match op {
        BinOp::Eq => o.is_eq(),
        BinOp::Ne => o.is_ne(),
        BinOp::Lt => o.is_lt(),
        BinOp::Le => o.is_le(),
        BinOp::Gt => o.is_gt(),
        BinOp::Ge => o.is_ge(),
        _ => unreachable!("only comparisons get here"),
    }
}

/// `a op b` for comparison `op` by `cmp`: one closure per operator, as
/// [`one_op`] makes them (q2's filter compares a remainder with a literal).
fn compared<T: Prim>(
    a: Arg<T>,
    op: BinOp,
    b: Arg<T>,
    cmp: impl Fn(&T, &T) -> Ordering + Copy + Send + Sync + 'static,
) -> Arg<bool> {
    // `holds` of a constant operator folds to its one test.
    match op {
        BinOp::Eq => one_op(a, b, move |x, y| Some(holds(BinOp::Eq, cmp(&x, &y))), Some),
        BinOp::Ne => one_op(a, b, move |x, y| Some(holds(BinOp::Ne, cmp(&x, &y))), Some),
        BinOp::Lt => one_op(a, b, move |x, y| Some(holds(BinOp::Lt, cmp(&x, &y))), Some),
        BinOp::Le => one_op(a, b, move |x, y| Some(holds(BinOp::Le, cmp(&x, &y))), Some),
        BinOp::Gt => one_op(a, b, move |x, y| Some(holds(BinOp::Gt, cmp(&x, &y))), Some),
        BinOp::Ge => one_op(a, b, move |x, y| Some(holds(BinOp::Ge, cmp(&x, &y))), Some),
        // Not a comparison (callers pass comparisons only).
        _ => one_op(a, b, move |x, y| Some(holds(op, cmp(&x, &y))), Some),
    }
}

fn is_arithmetic(rest: &[(BinOp, Node)]) -> bool {
    rest.iter().all(|(op, _)| matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem))
}

/// A run of operators applied from the left; null as soon as an operand is.
///
/// `apply` is a function item, not a pointer, so that it is inlined into the
/// closure; a run of one operator (`price * 0.908`) is a closure without the
/// loop.
fn chain<T: Prim, F>(first: Arg<T>, rest: Vec<(BinOp, Arg<T>)>, apply: F) -> Arg<T>
where
    F: Fn(BinOp, T, T) -> Option<T> + Copy + Send + Sync + 'static,
{
    if rest.is_empty() {
        return first;
    }
    chain_then(first, rest, apply, Some)
}

/// As [`chain`], and `then` of the run's value, in the same closure.
fn chain_then<T: Prim, U: Prim, F>(first: Arg<T>, rest: Vec<(BinOp, Arg<T>)>, apply: F, then: impl Then<T, U>) -> Arg<U>
where
    F: Fn(BinOp, T, T) -> Option<T> + Copy + Send + Sync + 'static,
{
    if rest.is_empty() {
        return first.map(then);
    }
    if let [(op, right)] = &rest[..] {
        let right = right.clone();
        // One closure per operator, each with its operator inlined: matched
        // once here, not on every row.
        return match op {
            BinOp::Add => one_op(first, right, move |x, y| apply(BinOp::Add, x, y), then),
            BinOp::Sub => one_op(first, right, move |x, y| apply(BinOp::Sub, x, y), then),
            BinOp::Mul => one_op(first, right, move |x, y| apply(BinOp::Mul, x, y), then),
            BinOp::Div => one_op(first, right, move |x, y| apply(BinOp::Div, x, y), then),
            BinOp::Rem => one_op(first, right, move |x, y| apply(BinOp::Rem, x, y), then),
            // Not arithmetic (callers pass runs of `+ - * / %` only): `apply`'s own answer.
            &op => one_op(first, right, move |x, y| apply(op, x, y), then),
        };
    }
    Arg::code(move |row| {
        let mut acc = first.get(row);
        for (op, right) in &rest {
            acc = match (acc, right.get(row)) {
                (Some(x), Some(y)) => apply(*op, x, y),
                _ => None,
            };
        }
        acc.and_then(then)
    })
}

/// `left op right`, then `then`, for one operator `op` (a closure of its
/// own type, so inlined): a field or a literal operand is read in the
/// closure itself rather than through [`Arg::get`]'s match, and two literals
/// are folded here. q1's `price * 0.908` is a field and a literal.
fn one_op<T: Prim, V: Prim, U: Prim>(
    left: Arg<T>,
    right: Arg<T>,
    op: impl Fn(T, T) -> Option<V> + Copy + Send + Sync + 'static,
    then: impl Then<V, U>,
) -> Arg<U> {
    match (left, right) {
        // Any null operand makes the result null.
        (Arg::Lit(None), _) | (_, Arg::Lit(None)) => Arg::Lit(None),
        (Arg::Lit(Some(x)), Arg::Lit(Some(y))) => Arg::Lit(op(x, y).and_then(then)),
        (Arg::Field(i), Arg::Lit(Some(y))) => Arg::code(move |row| op(T::read(&row[i])?, y).and_then(then)),
        (Arg::Lit(Some(x)), Arg::Field(j)) => Arg::code(move |row| op(x, T::read(&row[j])?).and_then(then)),
        (Arg::Field(i), Arg::Field(j)) => Arg::code(move |row| op(T::read(&row[i])?, T::read(&row[j])?).and_then(then)),
        (left, Arg::Lit(Some(y))) => Arg::code(move |row| op(left.get(row)?, y).and_then(then)),
        (Arg::Lit(Some(x)), right) => Arg::code(move |row| op(x, right.get(row)?).and_then(then)),
        (left, right) => Arg::code(move |row| op(left.get(row)?, right.get(row)?).and_then(then)),
    }
}

fn int_op(op: BinOp, x: i64, y: i64) -> Option<i64> {
    match op {
        BinOp::Add => Some(x.wrapping_add(y)),
        BinOp::Sub => Some(x.wrapping_sub(y)),
        BinOp::Mul => Some(x.wrapping_mul(y)),
        BinOp::Div => x.checked_div(y),
        BinOp::Rem => x.checked_rem(y),
        _ => None,
    }
}

fn float_op(op: BinOp, x: f64, y: f64) -> Option<f64> {
    match op {
        BinOp::Add => Some(x + y),
        BinOp::Sub => Some(x - y),
        BinOp::Mul => Some(x * y),
        BinOp::Div if y != 0.0 => Some(x / y),
        BinOp::Rem if y != 0.0 => Some(x % y),
        _ => None,
    }
}

/// `if(cond, then, otherwise)`: null for a null condition.
fn choose<T: Prim>(cond: Arg<bool>, then: Arg<T>, otherwise: Arg<T>) -> Arg<T> {
    Arg::code(move |row| match cond.get(row)? {
        true => then.get(row),
        false => otherwise.get(row),
    })
}

#[cfg(test)]
mod tests {
    use super::super::Expr;
    use super::*;

    /// Deterministic choices (the engine's `mix64` of a counter), so a failure reproduces.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 += 1;
            weir_core::keygroup::mix64(self.0)
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[(self.next() % items.len() as u64) as usize]
        }
    }

    fn schema() -> Schema {
        Schema::new([
            ("i", FieldType::Int),
            ("j", FieldType::Int),
            ("x", FieldType::Float),
            ("b", FieldType::Bool),
            ("s", FieldType::String),
        ])
    }

    fn row(g: &mut Gen) -> Row {
        let ints =
            [Value::Null, Value::Int(0), Value::Int(-1), Value::Int(7), Value::Int(i64::MIN), Value::Int(i64::MAX)];
        let floats = [Value::Null, Value::Float(0.0), Value::Float(-0.0), Value::Float(2.5), Value::Float(f64::NAN)];
        let bools = [Value::Null, Value::Bool(true), Value::Bool(false)];
        let strs = [Value::Null, Value::Str("east".into()), Value::Str("West".into()), Value::Str(" 12 ".into())];
        vec![
            g.pick(&ints).clone(),
            g.pick(&ints).clone(),
            g.pick(&floats).clone(),
            g.pick(&bools).clone(),
            g.pick(&strs).clone(),
        ]
    }

    /// A random expression text of about `depth` levels (it may not type-check).
    fn expr(g: &mut Gen, depth: u32) -> String {
        let leaves =
            ["i", "j", "x", "b", "s", "0", "3", "-2", "0.5", "0.0", "true", "false", "null", "'east'", "' 12 '"];
        if depth == 0 || g.next().is_multiple_of(4) {
            return g.pick(&leaves).to_string();
        }
        let ops = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or"];
        let funcs = ["trunc", "floor", "ceil", "round", "abs", "int", "float", "str", "lower", "len", "not", "-"];
        match g.next() % 4 {
            0 | 1 => {
                let mut s = expr(g, depth - 1);
                // Runs of one precedence, sometimes long.
                let op = *g.pick(&ops);
                for _ in 0..1 + g.next() % 3 {
                    s = format!("{s} {op} {}", expr(g, depth - 1));
                }
                format!("({s})")
            }
            2 => format!("{}({})", g.pick(&funcs), expr(g, depth - 1)),
            _ => format!("if({}, {}, {})", expr(g, depth - 1), expr(g, depth - 1), expr(g, depth - 1)),
        }
    }

    #[test]
    fn compiled_code_agrees_with_the_tree_walk() {
        let (schema, mut g) = (schema(), Gen(0x5eed_1234_abcd_0001));
        let (mut checked, mut typed) = (0, 0);
        for _ in 0..40_000 {
            let src = expr(&mut g, 3);
            let Ok(e) = Expr::compile(&src, &schema) else { continue };
            checked += 1;
            typed += usize::from(!matches!(e.code, Code::Value(_)));
            for _ in 0..8 {
                let r = row(&mut g);
                let (walked, compiled) = (eval(&e.node, &r), e.code.eval(&r));
                assert_eq!(compiled, walked, "`{src}` over {r:?}");
                assert_eq!(e.eval(&r), walked, "`{src}` over {r:?}");
                let mut pushed = vec![Value::Int(-1)];
                e.eval_into(&r, &mut pushed);
                assert_eq!(pushed, [Value::Int(-1), walked.clone()], "`{src}` over {r:?}");
                assert_eq!(e.code.matches(&r), matches!(walked, Value::Bool(true)), "`{src}` over {r:?}");
            }
        }
        // The generator must reach the typed paths, not only the fallback.
        assert!(checked > 5_000 && typed > checked / 3, "{checked} checked, {typed} typed");
    }

    #[test]
    fn runs_switch_to_float_where_their_type_does() {
        let schema = schema();
        let r = vec![Value::Int(7), Value::Int(2), Value::Float(1.5), Value::Bool(true), Value::Null];
        let e = |src: &str| Expr::compile(src, &schema).unwrap().eval(&r);
        // 7 / 2 is 3 in integers, then * 1.5.
        assert_eq!(e("i / j * x"), Value::Float(4.5));
        assert_eq!(e("x * i / j"), Value::Float(5.25));
        assert_eq!(e("i * 9223372036854775807 + x"), Value::Float(i64::MAX.wrapping_mul(7) as f64 + 1.5));
    }
}
