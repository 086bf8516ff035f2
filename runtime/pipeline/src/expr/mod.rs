//! Expressions in pipeline files: `amount > 100 and region == 'east'`,
//! `trunc(price * 0.908)`.
//!
//! An expression is parsed once and type-checked against the input schema,
//! into a small tree whose field references are resolved to indices, then
//! compiled to closures specialised by type ([`code`]); the tree walk
//! ([`eval`]) is what the closures fall back to for strings and what they
//! are tested against. Integer arithmetic wraps (as in the
//! workloads); division or remainder by zero and any null operand give null;
//! a filter whose expression is null drops the row.
//!
//! Grammar, loosest binding first: `or`/`||`, `and`/`&&`, `not`/`!`,
//! comparisons (`== != < <= > >=`), `+ -`, `* / %`, unary `-`, then literals
//! (`42`, `0.5`, `'text'` or `"text"`, `true`, `false`, `null`), field names,
//! calls and parentheses. Functions: `trunc floor ceil round` (to int), `abs`,
//! `int float str`, `lower upper len`, `if(cond, then, else)`.
//!
//! Pipeline files come from users (and, through the operator, from anyone who
//! may create a StreamJob), so an expression is at most [`MAX_LEN`] bytes and
//! nests at most [`MAX_DEPTH`] levels deep (parentheses, call arguments, `not`
//! and unary `-`); beyond that it is an error naming the limit and the column.
//! A run of operators of one precedence (`a + b + c`, `x or y or z`) is one
//! node whatever its length, so the depth bounds every recursion over the tree
//! (parsing and type-checking, evaluation, dropping it) by a small multiple
//! of [`MAX_DEPTH`].
//!
//! ```
//! use weir_pipeline::expr::Expr;
//! use weir_pipeline::value::{FieldType, Schema, Value};
//! let schema = Schema::new([("price", FieldType::Int)]);
//! let e = Expr::compile("trunc(price * 0.908)", &schema).unwrap();
//! assert_eq!(e.eval(&vec![Value::Int(1000)]), Value::Int(908));
//! ```

mod code;

use smol_str::SmolStr;

use crate::value::{FieldType, Row, Schema, Value};

/// The longest expression, in bytes.
pub const MAX_LEN: usize = 64 * 1024;
/// The deepest nesting of parentheses, call arguments, `not` and unary `-`.
pub const MAX_DEPTH: usize = 64;

/// A compiled, type-checked expression.
#[derive(Clone, Debug)]
pub struct Expr {
    node: Node,
    ty: Option<FieldType>,
    /// The same expression compiled (see [`code`]): what [`Expr::eval`] runs.
    code: code::Code,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Func {
    Trunc,
    Floor,
    Ceil,
    Round,
    Abs,
    Int,
    Float,
    Str,
    Lower,
    Upper,
    Len,
    If,
}

#[derive(Clone, Debug)]
enum Node {
    Field(usize),
    Lit(Value),
    Neg(Box<Node>),
    Not(Box<Node>),
    /// `first op1 n1 op2 n2 ...`: a run of operators of one precedence, applied from the left.
    Chain(Box<Node>, Vec<(BinOp, Node)>),
    Call(Func, Vec<Node>),
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, String> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    const OPS: [&str; 19] =
        ["==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",", "!", "=", "."];
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                i += 1;
            }
            let is_float = i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit();
            if is_float {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text = src[start..i].replace('_', "");
            let tok = if is_float {
                Tok::Float(text.parse().map_err(|_| format!("at column {}: bad number `{text}`", start + 1))?)
            } else {
                Tok::Int(text.parse().map_err(|_| format!("at column {}: integer `{text}` out of range", start + 1))?)
            };
            out.push((start, tok));
        } else if c == b'\'' || c == b'"' {
            let start = i;
            i += 1;
            let mut s = String::new();
            loop {
                match b.get(i) {
                    None => return Err(format!("at column {}: unterminated string", start + 1)),
                    Some(&q) if q == c => break,
                    Some(b'\\') if i + 1 < b.len() => {
                        let ch = src[i + 1..].chars().next().expect("in bounds");
                        s.push(ch);
                        i += 1 + ch.len_utf8();
                    }
                    Some(_) => {
                        let ch = src[i..].chars().next().expect("in bounds");
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            i += 1;
            out.push((start, Tok::Str(s)));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(src[start..i].to_string())));
        } else if let Some(op) = OPS.iter().find(|op| src[i..].starts_with(**op)) {
            if *op == "=" || *op == "." {
                return Err(format!(
                    "at column {}: unexpected `{op}`{}",
                    i + 1,
                    if *op == "=" { " (use `==`)" } else { "" }
                ));
            }
            out.push((i, Tok::Op(op)));
            i += op.len();
        } else {
            let ch = src[i..].chars().next().expect("in bounds");
            return Err(format!("at column {}: unexpected character `{ch}`", i + 1));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    schema: &'a Schema,
    len: usize,
    /// How deeply the current position nests (see [`MAX_DEPTH`]).
    depth: usize,
}

type Typed = (Node, Option<FieldType>);

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(c, _)| *c) + 1
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.peek()
            == Some(&Tok::Op(match op {
                "(" => "(",
                ")" => ")",
                "," => ",",
                _ => return false,
            }))
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Parses with `f` one level deeper (opened at column `col`), refusing to go past [`MAX_DEPTH`].
    fn nested(&mut self, col: usize, f: impl FnOnce(&mut Self) -> Result<Typed, String>) -> Result<Typed, String> {
        if self.depth == MAX_DEPTH {
            return Err(format!(
                "at column {col}: expression nests deeper than {MAX_DEPTH} levels (parentheses, calls, `not` and unary `-`)"
            ));
        }
        self.depth += 1;
        let parsed = f(self);
        self.depth -= 1;
        parsed
    }

    fn binop(&self, level: u8) -> Option<BinOp> {
        let t = self.peek()?;
        let op = match (level, t) {
            (0, Tok::Op("||")) => BinOp::Or,
            (0, Tok::Ident(w)) if w == "or" => BinOp::Or,
            (1, Tok::Op("&&")) => BinOp::And,
            (1, Tok::Ident(w)) if w == "and" => BinOp::And,
            (3, Tok::Op("==")) => BinOp::Eq,
            (3, Tok::Op("!=")) => BinOp::Ne,
            (3, Tok::Op("<")) => BinOp::Lt,
            (3, Tok::Op("<=")) => BinOp::Le,
            (3, Tok::Op(">")) => BinOp::Gt,
            (3, Tok::Op(">=")) => BinOp::Ge,
            (4, Tok::Op("+")) => BinOp::Add,
            (4, Tok::Op("-")) => BinOp::Sub,
            (5, Tok::Op("*")) => BinOp::Mul,
            (5, Tok::Op("/")) => BinOp::Div,
            (5, Tok::Op("%")) => BinOp::Rem,
            _ => return None,
        };
        Some(op)
    }

    fn expr(&mut self, level: u8) -> Result<Typed, String> {
        if level == 2 {
            let is_not =
                matches!(self.peek(), Some(Tok::Op("!"))) || matches!(self.peek(), Some(Tok::Ident(w)) if w == "not");
            if is_not {
                let col = self.col();
                self.pos += 1;
                let (n, t) = self.nested(col, |p| p.expr(2))?;
                expect_type(t, &[FieldType::Bool], "`not`", col)?;
                return Ok((Node::Not(Box::new(n)), Some(FieldType::Bool)));
            }
            return self.expr(3);
        }
        if level == 6 {
            return self.unary();
        }
        let (first, mut ty) = self.expr(level + 1)?;
        let mut rest = Vec::new();
        while let Some(op) = self.binop(level) {
            let col = self.col();
            self.pos += 1;
            let (right, right_ty) = self.expr(level + 1)?;
            ty = bin_type(op, ty, right_ty).map_err(|e| format!("at column {col}: {e}"))?;
            rest.push((op, right));
            if level == 3 && self.binop(3).is_some() {
                return Err(format!("at column {}: comparisons do not chain; use `and`", self.col()));
            }
        }
        Ok(if rest.is_empty() { (first, ty) } else { (Node::Chain(Box::new(first), rest), ty) })
    }

    fn unary(&mut self) -> Result<Typed, String> {
        if self.peek() == Some(&Tok::Op("-")) {
            let col = self.col();
            self.pos += 1;
            let (n, t) = self.nested(col, |p| p.unary())?;
            expect_type(t, &[FieldType::Int, FieldType::Float], "unary `-`", col)?;
            return Ok((Node::Neg(Box::new(n)), t));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Typed, String> {
        let col = self.col();
        let Some((_, tok)) = self.toks.get(self.pos).cloned() else {
            return Err(format!("at column {col}: expression ends too early"));
        };
        self.pos += 1;
        match tok {
            Tok::Int(i) => Ok((Node::Lit(Value::Int(i)), Some(FieldType::Int))),
            Tok::Float(f) => Ok((Node::Lit(Value::Float(f)), Some(FieldType::Float))),
            Tok::Str(s) => Ok((Node::Lit(Value::Str(SmolStr::new(s))), Some(FieldType::String))),
            Tok::Op("(") => {
                let inner = self.nested(col, |p| p.expr(0))?;
                if !self.eat_op(")") {
                    return Err(format!("at column {}: expected `)`", self.col()));
                }
                Ok(inner)
            }
            Tok::Ident(w) if w == "true" || w == "false" => {
                Ok((Node::Lit(Value::Bool(w == "true")), Some(FieldType::Bool)))
            }
            Tok::Ident(w) if w == "null" => Ok((Node::Lit(Value::Null), None)),
            Tok::Ident(name) if self.peek() == Some(&Tok::Op("(")) => {
                self.pos += 1;
                let mut args = Vec::new();
                if !self.eat_op(")") {
                    loop {
                        args.push(self.nested(self.col(), |p| p.expr(0))?);
                        if self.eat_op(")") {
                            break;
                        }
                        if !self.eat_op(",") {
                            return Err(format!("at column {}: expected `,` or `)`", self.col()));
                        }
                    }
                }
                call(&name, args).map_err(|e| format!("at column {col}: {e}"))
            }
            Tok::Ident(name) => match self.schema.index(&name) {
                Some(i) => Ok((Node::Field(i), Some(self.schema.field_type(i)))),
                None => {
                    Err(format!("at column {col}: unknown field `{name}` (fields: {})", self.schema.names().join(", ")))
                }
            },
            Tok::Op(op) => Err(format!("at column {col}: unexpected `{op}`")),
        }
    }
}

fn expect_type(t: Option<FieldType>, allowed: &[FieldType], what: &str, col: usize) -> Result<(), String> {
    match t {
        Some(t) if !allowed.contains(&t) => Err(format!(
            "at column {col}: {what} takes {}, not {t}",
            allowed.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" or ")
        )),
        _ => Ok(()),
    }
}

fn bin_type(op: BinOp, l: Option<FieldType>, r: Option<FieldType>) -> Result<Option<FieldType>, String> {
    use FieldType::*;
    let (Some(a), Some(b)) = (l, r) else {
        // A null literal on either side: the result is null, typed by the other side.
        return Ok(match op {
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::And | BinOp::Or => {
                Some(Bool)
            }
            _ => l.or(r),
        });
    };
    match op {
        BinOp::Add if a == String && b == String => Ok(Some(String)),
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
            if a.is_numeric() && b.is_numeric() {
                Ok(Some(if a == Float || b == Float { Float } else { Int }))
            } else {
                Err(format!("arithmetic needs numbers, got {a} and {b}"))
            }
        }
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            if a == b || (a.is_numeric() && b.is_numeric()) {
                Ok(Some(Bool))
            } else {
                Err(format!("cannot compare {a} with {b}"))
            }
        }
        BinOp::And | BinOp::Or => {
            if a == Bool && b == Bool {
                Ok(Some(Bool))
            } else {
                Err(format!("`and`/`or` need booleans, got {a} and {b}"))
            }
        }
    }
}

fn call(name: &str, args: Vec<Typed>) -> Result<Typed, String> {
    let (f, arity) = match name {
        "trunc" => (Func::Trunc, 1),
        "floor" => (Func::Floor, 1),
        "ceil" => (Func::Ceil, 1),
        "round" => (Func::Round, 1),
        "abs" => (Func::Abs, 1),
        "int" => (Func::Int, 1),
        "float" => (Func::Float, 1),
        "str" => (Func::Str, 1),
        "lower" => (Func::Lower, 1),
        "upper" => (Func::Upper, 1),
        "len" => (Func::Len, 1),
        "if" => (Func::If, 3),
        _ => return Err(format!("unknown function `{name}`")),
    };
    if args.len() != arity {
        return Err(format!("`{name}` takes {arity} argument(s), got {}", args.len()));
    }
    let types: Vec<Option<FieldType>> = args.iter().map(|a| a.1).collect();
    let ty = call_type(f, &types).map_err(|e| format!("`{name}` {e}"))?;
    Ok((Node::Call(f, args.into_iter().map(|a| a.0).collect()), ty))
}

/// The result type of `f` over arguments of `types` (as many as it takes),
/// or what is wrong, to follow the function's name.
fn call_type(f: Func, types: &[Option<FieldType>]) -> Result<Option<FieldType>, String> {
    use FieldType::*;
    let t = types[0];
    let numeric = |t: Option<FieldType>| t.is_none_or(|t| t.is_numeric());
    Ok(match f {
        Func::Trunc | Func::Floor | Func::Ceil | Func::Round if numeric(t) => Some(Int),
        Func::Abs if numeric(t) => t,
        Func::Int if t != Some(Bool) => Some(Int),
        Func::Float if t != Some(Bool) => Some(Float),
        Func::Str => Some(String),
        Func::Lower | Func::Upper if t.is_none_or(|t| t == String) => Some(String),
        Func::Len if t.is_none_or(|t| t == String) => Some(Int),
        Func::If => {
            if t.is_some_and(|t| t != Bool) {
                return Err("needs a boolean condition".into());
            }
            match (types[1], types[2]) {
                (Some(a), Some(b)) if a != b => return Err(format!("branches differ in type: {a} and {b}")),
                (a, b) => a.or(b),
            }
        }
        _ => return Err(format!("cannot take {}", t.map_or("null".into(), |t| t.to_string()))),
    })
}

/// The type of a checked expression's node (as its parse found it).
fn type_of(node: &Node, schema: &Schema) -> Option<FieldType> {
    match node {
        Node::Field(i) => Some(schema.field_type(*i)),
        Node::Lit(v) => v.field_type(),
        Node::Neg(n) => type_of(n, schema),
        Node::Not(_) => Some(FieldType::Bool),
        Node::Chain(first, rest) => rest.iter().fold(type_of(first, schema), |ty, (op, n)| {
            bin_type(*op, ty, type_of(n, schema)).expect("type-checked when parsed")
        }),
        Node::Call(f, args) => {
            let types: Vec<_> = args.iter().map(|a| type_of(a, schema)).collect();
            call_type(*f, &types).expect("type-checked when parsed")
        }
    }
}

impl Expr {
    /// Parses and type-checks `src` against `schema`.
    pub fn compile(src: &str, schema: &Schema) -> Result<Expr, String> {
        if src.len() > MAX_LEN {
            return Err(format!("expression is {} bytes long; the limit is {MAX_LEN} bytes", src.len()));
        }
        let toks = tokenize(src)?;
        if toks.is_empty() {
            return Err("empty expression".into());
        }
        let mut p = Parser { toks, pos: 0, schema, len: src.len(), depth: 0 };
        let (node, ty) = p.expr(0)?;
        if p.pos < p.toks.len() {
            return Err(format!("at column {}: unexpected `{}`", p.col(), &src[p.toks[p.pos].0..]));
        }
        let code = code::Code::compile(&node, schema);
        Ok(Expr { node, ty, code })
    }

    /// The result type; `None` for an expression that is always null.
    pub fn result_type(&self) -> Option<FieldType> {
        self.ty
    }

    /// A field is read inline (see [`code::Code::Field`]); anything else is
    /// a call.
    #[inline]
    pub fn eval(&self, row: &Row) -> Value {
        match self.code {
            code::Code::Field(i) => row[i].clone(),
            _ => self.code.eval(row),
        }
    }

    /// The value pushed onto `out` (a row being made): as [`Expr::eval`],
    /// without returning the value through the stack.
    #[inline]
    pub fn eval_into(&self, row: &Row, out: &mut Row) {
        match self.code {
            code::Code::Field(i) => out.push(row[i].clone()),
            _ => self.code.eval_into(row, out),
        }
    }

    /// Marks in `read` (one flag per field of the schema it was compiled
    /// against) every field the expression reads.
    pub fn mark_fields(&self, read: &mut [bool]) {
        mark_fields(&self.node, read);
    }

    /// For filters: true only for a true result (null is false).
    pub fn matches(&self, row: &Row) -> bool {
        self.code.matches(row)
    }
}

fn mark_fields(node: &Node, read: &mut [bool]) {
    match node {
        Node::Field(i) => read[*i] = true,
        Node::Lit(_) => {}
        Node::Neg(n) | Node::Not(n) => mark_fields(n, read),
        Node::Chain(first, rest) => {
            mark_fields(first, read);
            rest.iter().for_each(|(_, n)| mark_fields(n, read));
        }
        Node::Call(_, args) => args.iter().for_each(|n| mark_fields(n, read)),
    }
}

fn eval(node: &Node, row: &Row) -> Value {
    match node {
        Node::Field(i) => row[*i].clone(),
        Node::Lit(v) => v.clone(),
        Node::Neg(n) => match eval(n, row) {
            Value::Int(i) => Value::Int(i.wrapping_neg()),
            Value::Float(f) => Value::Float(-f),
            _ => Value::Null,
        },
        Node::Not(n) => match eval(n, row) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        Node::Chain(first, rest) => {
            rest.iter().fold(eval(first, row), |left, (op, right)| apply(*op, left, right, row))
        }
        Node::Call(Func::If, args) => match eval(&args[0], row) {
            Value::Bool(true) => eval(&args[1], row),
            Value::Bool(false) => eval(&args[2], row),
            _ => Value::Null,
        },
        Node::Call(f, args) => call_value(*f, eval(&args[0], row)),
    }
}

/// `left op right`, evaluating `right` only when the result depends on it
/// (`and` and `or` short-circuit; a null on their left gives null).
fn apply(op: BinOp, left: Value, right: &Node, row: &Row) -> Value {
    match (op, left) {
        (BinOp::And, Value::Bool(false)) => Value::Bool(false),
        (BinOp::Or, Value::Bool(true)) => Value::Bool(true),
        (BinOp::And | BinOp::Or, Value::Bool(_)) => eval(right, row),
        (BinOp::And | BinOp::Or, _) => Value::Null,
        (op, left) => binary(op, left, eval(right, row)),
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Value {
    use Value::*;
    if matches!(a, Null) || matches!(b, Null) {
        return Null;
    }
    match op {
        BinOp::Eq => Bool(a.compare(&b) == Some(std::cmp::Ordering::Equal)),
        BinOp::Ne => Bool(a.compare(&b) != Some(std::cmp::Ordering::Equal)),
        BinOp::Lt => a.compare(&b).map_or(Null, |o| Bool(o.is_lt())),
        BinOp::Le => a.compare(&b).map_or(Null, |o| Bool(o.is_le())),
        BinOp::Gt => a.compare(&b).map_or(Null, |o| Bool(o.is_gt())),
        BinOp::Ge => a.compare(&b).map_or(Null, |o| Bool(o.is_ge())),
        _ => match (a, b) {
            (Int(x), Int(y)) => match op {
                BinOp::Add => Int(x.wrapping_add(y)),
                BinOp::Sub => Int(x.wrapping_sub(y)),
                BinOp::Mul => Int(x.wrapping_mul(y)),
                BinOp::Div => x.checked_div(y).map_or(Null, Int),
                BinOp::Rem => x.checked_rem(y).map_or(Null, Int),
                _ => Null,
            },
            (Str(x), Str(y)) if op == BinOp::Add => Str(SmolStr::new(format!("{x}{y}"))),
            (x, y) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => Float(match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div if y != 0.0 => x / y,
                    BinOp::Rem if y != 0.0 => x % y,
                    _ => return Null,
                }),
                _ => Null,
            },
        },
    }
}

fn call_value(f: Func, v: Value) -> Value {
    use Value::*;
    match (f, v) {
        (_, Null) => Null,
        (Func::Trunc | Func::Floor | Func::Ceil | Func::Round | Func::Int, Int(i)) => Int(i),
        (Func::Trunc | Func::Int, Float(x)) => Int(x as i64),
        (Func::Floor, Float(x)) => Int(x.floor() as i64),
        (Func::Ceil, Float(x)) => Int(x.ceil() as i64),
        (Func::Round, Float(x)) => Int(x.round() as i64),
        (Func::Int, Str(s)) => s.trim().parse().map_or(Null, Int),
        (Func::Abs, Int(i)) => Int(i.wrapping_abs()),
        (Func::Abs, Float(x)) => Float(x.abs()),
        (Func::Float, Int(i)) => Float(i as f64),
        (Func::Float, Float(x)) => Float(x),
        (Func::Float, Str(s)) => s.trim().parse().map_or(Null, Float),
        (Func::Str, v) => Str(SmolStr::new(v.to_string())),
        (Func::Lower, Str(s)) => Str(SmolStr::new(s.to_lowercase())),
        (Func::Upper, Str(s)) => Str(SmolStr::new(s.to_uppercase())),
        (Func::Len, Str(s)) => Int(s.chars().count() as i64),
        _ => Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new([("amount", FieldType::Int), ("region", FieldType::String), ("price", FieldType::Float)])
    }

    fn row() -> Row {
        vec![Value::Int(120), Value::Str("east".into()), Value::Float(2.5)]
    }

    fn eval_str(src: &str) -> Value {
        Expr::compile(src, &schema()).unwrap().eval(&row())
    }

    #[test]
    fn precedence_and_logic() {
        assert_eq!(eval_str("amount > 100 and region == 'east'"), Value::Bool(true));
        assert_eq!(eval_str("not amount > 100 or region != \"east\""), Value::Bool(false));
        assert_eq!(eval_str("1 + 2 * 3 - 4 % 3"), Value::Int(6));
        assert_eq!(eval_str("(1 + 2) * 3"), Value::Int(9));
        assert_eq!(eval_str("-amount + 1"), Value::Int(-119));
    }

    #[test]
    fn numbers_widen_and_functions_convert() {
        assert_eq!(eval_str("amount * price"), Value::Float(300.0));
        assert_eq!(eval_str("trunc(amount * 0.908)"), Value::Int(108));
        assert_eq!(eval_str("if(amount > 100, 'big', 'small')"), Value::Str("big".into()));
        assert_eq!(eval_str("upper(region) + '!'"), Value::Str("EAST!".into()));
        assert_eq!(eval_str("amount / 0"), Value::Null);
    }

    #[test]
    fn errors_name_the_problem_and_column() {
        let err = |s: &str| Expr::compile(s, &schema()).unwrap_err();
        assert!(err("amout > 1").contains("unknown field `amout`"), "{}", err("amout > 1"));
        assert!(err("amount + region").contains("arithmetic needs numbers"));
        assert!(err("region > 1").contains("cannot compare string with int"));
        assert!(err("amount = 1").contains("use `==`"));
        assert!(err("amount >").contains("ends too early"));
        assert!(err("frob(amount)").contains("unknown function `frob`"));
        assert!(err("1 < 2 < 3").contains("do not chain"));
        assert!(err("'open").contains("unterminated"));
        assert!(err("amount > 1 )").contains("column 12"));
    }

    #[test]
    fn deep_or_long_expressions_are_errors_not_stack_overflows() {
        let err = |s: &str| Expr::compile(s, &schema()).unwrap_err();
        // 100 thousand deep is over the length limit; 30 thousand deep is not, but over the depth limit.
        let deep = |n| format!("{}amount{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(err(&deep(100_000)), "expression is 200006 bytes long; the limit is 65536 bytes");
        let e = err(&deep(30_000));
        assert_eq!(e, "at column 65: expression nests deeper than 64 levels (parentheses, calls, `not` and unary `-`)");
        for opener in ["not ", "-", "abs(", "if(true, 1, ", "(-"] {
            let e = err(&format!("{}amount", opener.repeat((MAX_LEN - 6) / opener.len())));
            assert!(e.contains("nests deeper than 64 levels"), "{opener}: {e}");
        }
        let long = format!("amount{}", " + 1".repeat(MAX_LEN / 4));
        assert_eq!(err(&long), format!("expression is {} bytes long; the limit is 65536 bytes", long.len()));
    }

    #[test]
    fn expressions_within_the_limits_compile_and_evaluate_on_a_small_stack() {
        let deepest = format!("{}amount{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        // `abs(-(` opens 3 levels, `not (` 2: 62 in all.
        let mixed = format!("not ({}amount{} > 1)", "abs(-(".repeat(20), "))".repeat(20));
        let chain = format!("amount{}", " + 1".repeat(MAX_LEN / 4 - 2));
        // A default thread's stack, in a debug build (whose frames are large: a release
        // build needs far less): parsing, type-checking, evaluating and dropping are all
        // within a small multiple of MAX_DEPTH frames.
        let results = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || [deepest, mixed, chain].map(|src| Expr::compile(&src, &schema()).map(|e| e.eval(&row()))))
            .unwrap()
            .join()
            .unwrap();
        let [deepest, mixed, chain] = results.map(Result::unwrap);
        assert_eq!(deepest, Value::Int(120));
        assert_eq!(mixed, Value::Bool(false));
        assert_eq!(chain, Value::Int(120 + (MAX_LEN / 4 - 2) as i64));
    }

    #[test]
    fn runs_of_one_precedence_keep_their_order_and_short_circuits() {
        assert_eq!(eval_str("100 - 10 - 1"), Value::Int(89));
        assert_eq!(eval_str("100 / 10 / 2 * 3"), Value::Int(15));
        assert_eq!(eval_str("amount > 1 and amount / 0 > 1 and true"), Value::Null);
        assert_eq!(eval_str("amount < 1 and amount / 0 > 1"), Value::Bool(false));
        assert_eq!(eval_str("amount < 1 or amount > 1 or amount / 0 > 1"), Value::Bool(true));
        assert_eq!(eval_str("amount / 0 > 1 or true"), Value::Null);
        assert_eq!(eval_str("'a\\é' + '\\'b'"), Value::Str("aé'b".into()));
    }

    #[test]
    fn null_filters_out() {
        let e = Expr::compile("amount / 0 > 1", &schema()).unwrap();
        assert!(!e.matches(&row()));
    }
}
