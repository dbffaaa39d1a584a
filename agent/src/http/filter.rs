//! `?filter=` expressions: go-bexpr's grammar and semantics over JSON response rows.
//!
//! Grammar (as go-bexpr's PEG): `or`, `and`, `not`, parentheses; matches
//! `Selector == Value`, `!=`, `contains`, `not contains`, `matches`, `not matches`,
//! `Selector is empty`, `is not empty`, `Value in Selector`, `Value not in Selector`.
//! Selectors are dotted paths of identifiers with `["key"]` or `.key` for map keys; values are
//! `"..."` (Go escapes) or backtick strings, numbers, or bare identifiers.
//!
//! Semantics (go-bexpr's reflection evaluator, which Consul uses): a list met in the middle of
//! a path is an implicit "any" (`Checks.Status == "passing"` holds when one check passes, so
//! `Checks.Status != "critical"` holds when none is critical); a missing map key is a value
//! that equals nothing, contains nothing and is empty; strings `contain` substrings, lists
//! their elements, maps their keys; numbers and booleans compare after the value is read as
//! one. Selectors are validated against the row's [`Shape`] before anything is evaluated.
//!
//! Invariants: parsing and evaluation are plain functions that never panic, whatever the
//! input (property-tested); nesting depth and expression length are bounded; regular
//! expressions are compiled once, with a size limit.

use std::fmt;

use regex_automata::meta::Regex;
use serde_json::Value;

use super::schema::Shape;

/// Longest expression accepted, in bytes.
pub(crate) const MAX_FILTER_LEN: usize = 8 * 1024;
/// Deepest nesting of parentheses and `not`.
const MAX_DEPTH: usize = 32;
/// Most segments in one selector (rows are a few levels deep).
const MAX_SELECTOR_SEGMENTS: usize = 32;
/// Largest compiled regular expression, in bytes.
const MAX_REGEX_SIZE: usize = 1 << 20;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(msg.into()))
}

/// A match operator. `contains` is `in` with the operands swapped, as in go-bexpr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

impl Op {
    fn negated(self) -> bool {
        matches!(
            self,
            Op::NotEqual | Op::NotIn | Op::IsNotEmpty | Op::NotMatches
        )
    }

    fn positive(self) -> Op {
        match self {
            Op::NotEqual => Op::Equal,
            Op::NotIn => Op::In,
            Op::IsNotEmpty => Op::IsEmpty,
            Op::NotMatches => Op::Matches,
            other => other,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Equal => "==",
            Op::NotEqual => "!=",
            Op::In => "in",
            Op::NotIn => "not in",
            Op::IsEmpty => "is empty",
            Op::IsNotEmpty => "is not empty",
            Op::Matches => "matches",
            Op::NotMatches => "not matches",
        }
    }
}

#[derive(Debug)]
struct Match {
    selector: Vec<String>,
    op: Op,
    value: String,
    regex: Option<Regex>,
}

impl Match {
    fn selector_text(&self) -> String {
        self.selector.join(".")
    }
}

#[derive(Debug)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

/// A parsed filter expression.
#[derive(Debug)]
pub(crate) struct Filter {
    expr: Expr,
}

impl Filter {
    /// Parses an expression.
    pub(crate) fn parse(input: &str) -> Result<Filter, FilterError> {
        if input.len() > MAX_FILTER_LEN {
            return err(format!(
                "filter expression is too long ({} bytes, limit {MAX_FILTER_LEN})",
                input.len()
            ));
        }
        let mut p = Parser {
            src: input,
            pos: 0,
            depth: 0,
        };
        p.skip_ws();
        let expr = p.or_expr()?;
        p.skip_ws();
        if p.pos < p.src.len() {
            return err(format!(
                "unexpected input at position {}: {:?}",
                p.pos + 1,
                p.rest().chars().take(16).collect::<String>()
            ));
        }
        Ok(Filter { expr })
    }

    /// Checks every selector and operator against the shape of the rows.
    pub(crate) fn validate(&self, shape: &Shape) -> Result<(), FilterError> {
        validate_expr(&self.expr, shape)
    }

    /// Whether a row (of the validated shape) matches.
    pub(crate) fn matches(&self, row: &Value, shape: &Shape) -> Result<bool, FilterError> {
        eval(&self.expr, row, shape)
    }
}

// --- parsing -------------------------------------------------------------------------------

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !is_ws(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        self.pos > start
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// `_ word _` (whitespace required on both sides); restores the position on failure.
    fn spaced_words(&mut self, words: &[&str]) -> bool {
        let start = self.pos;
        for word in words {
            if !self.skip_ws() || !self.eat(word) {
                self.pos = start;
                return false;
            }
        }
        if !self.skip_ws() {
            self.pos = start;
            return false;
        }
        true
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(format!(
                "expression is nested too deeply (limit {MAX_DEPTH})"
            ));
        }
        Ok(())
    }

    /// `AndExpr (or AndExpr)*`, flattened (no recursion per term).
    fn or_expr(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.and_expr()?];
        while self.spaced_words(&["or"]) {
            terms.push(self.and_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    /// `NotExpr (and NotExpr)*`.
    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.not_expr()?];
        while self.spaced_words(&["and"]) {
            terms.push(self.not_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    /// `not NotExpr` or a primary; double negations cancel, as in go-bexpr.
    fn not_expr(&mut self) -> Result<Expr, FilterError> {
        let (start, depth) = (self.pos, self.depth);
        if self.eat("not") && self.skip_ws() {
            self.enter()?;
            let inner = self.not_expr();
            self.depth = depth;
            match inner {
                Ok(Expr::Not(e)) => return Ok(*e),
                Ok(e) => return Ok(Expr::Not(Box::new(e))),
                Err(first) => {
                    // `not` may also be a selector (`not == x`): retry as a match.
                    self.pos = start;
                    return self.primary().map_err(|_| first);
                }
            }
        }
        self.pos = start;
        self.primary()
    }

    /// `( OrExpr )` or a match.
    fn primary(&mut self) -> Result<Expr, FilterError> {
        if self.eat("(") {
            let depth = self.depth;
            self.enter()?;
            self.skip_ws();
            let inner = self.or_expr();
            self.depth = depth;
            let inner = inner?;
            self.skip_ws();
            if !self.eat(")") {
                return err("Unmatched parentheses");
            }
            return Ok(inner);
        }
        self.match_expr().map(Expr::Match)
    }

    /// `Selector op Value`, `Selector is [not] empty`, or `Value [not] in Selector`.
    fn match_expr(&mut self) -> Result<Match, FilterError> {
        let start = self.pos;
        if let Some(selector) = self.selector()? {
            if let Some(op) = self.selector_op() {
                let value = match op {
                    Op::IsEmpty | Op::IsNotEmpty => String::new(),
                    _ => self.value()?,
                };
                return build_match(selector, op, value);
            }
            // Perhaps `bare_value in Selector`.
            self.pos = start;
        }
        let value = self.value()?;
        let op = if self.spaced_words(&["in"]) {
            Op::In
        } else if self.spaced_words(&["not", "in"]) {
            Op::NotIn
        } else {
            return err(format!(
                "expected a match operator at position {}",
                self.pos + 1
            ));
        };
        match self.selector()? {
            Some(selector) => build_match(selector, op, value),
            None => err("Invalid selector"),
        }
    }

    /// The operator after a selector, if any (position unchanged when none).
    fn selector_op(&mut self) -> Option<Op> {
        let start = self.pos;
        self.skip_ws();
        if self.eat("==") {
            self.skip_ws();
            return Some(Op::Equal);
        }
        if self.eat("!=") {
            self.skip_ws();
            return Some(Op::NotEqual);
        }
        self.pos = start;
        let words: [(&[&str], Op); 6] = [
            (&["is", "not", "empty"], Op::IsNotEmpty),
            (&["contains"], Op::In),
            (&["not", "contains"], Op::NotIn),
            (&["matches"], Op::Matches),
            (&["not", "matches"], Op::NotMatches),
            (&["is", "empty"], Op::IsEmpty),
        ];
        for (seq, op) in words {
            if matches!(op, Op::IsEmpty | Op::IsNotEmpty) {
                // `is empty` ends the match: no whitespace is required after it.
                if let Some(()) = self.trailing_words(seq) {
                    return Some(op);
                }
            } else if self.spaced_words(seq) {
                return Some(op);
            }
        }
        None
    }

    /// `_ w1 _ w2 ...` with whitespace before each word but none required after the last,
    /// which must not run on into an identifier.
    fn trailing_words(&mut self, words: &[&str]) -> Option<()> {
        let start = self.pos;
        for word in words {
            if !self.skip_ws() || !self.eat(word) {
                self.pos = start;
                return None;
            }
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos = start;
            return None;
        }
        Some(())
    }

    /// `[a-zA-Z][a-zA-Z0-9_/]*`.
    fn identifier(&mut self) -> Option<&'a str> {
        let rest = self.rest();
        let mut chars = rest.char_indices();
        match chars.next() {
            Some((_, c)) if c.is_ascii_alphabetic() => {}
            _ => return None,
        }
        let end = chars
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '/'))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += end;
        Some(&rest[..end])
    }

    /// A selector path, or `None` (position unchanged) when there is none here.
    fn selector(&mut self) -> Result<Option<Vec<String>>, FilterError> {
        let Some(first) = self.identifier() else {
            return Ok(None);
        };
        let mut path = vec![first.to_owned()];
        loop {
            if path.len() > MAX_SELECTOR_SEGMENTS {
                return err(format!(
                    "selector has more than {MAX_SELECTOR_SEGMENTS} segments"
                ));
            }
            let before = self.pos;
            if self.eat(".") {
                if let Some(ident) = self.identifier() {
                    path.push(ident.to_owned());
                    continue;
                }
                let digits = self.rest().bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 {
                    path.push(self.rest()[..digits].to_owned());
                    self.pos += digits;
                    continue;
                }
                self.pos = before;
                break;
            }
            if self.eat("[") {
                self.skip_ws();
                let Some(key) = self.string_literal()? else {
                    return err("Invalid index");
                };
                self.skip_ws();
                if !self.eat("]") {
                    return err("Unclosed index expression");
                }
                path.push(key);
                continue;
            }
            break;
        }
        Ok(Some(path))
    }

    /// A match value: a bare selector (its text), a number or a string.
    fn value(&mut self) -> Result<String, FilterError> {
        if let Some(path) = self.selector()? {
            return Ok(path.join("."));
        }
        if let Some(n) = self.number()? {
            return Ok(n);
        }
        if let Some(s) = self.string_literal()? {
            return Ok(s);
        }
        err(format!("expected a value at position {}", self.pos + 1))
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, which must end at whitespace, `)` or the end.
    fn number(&mut self) -> Result<Option<String>, FilterError> {
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let mut i = usize::from(bytes.first() == Some(&b'-'));
        let int_start = i;
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Ok(None),
        }
        if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        debug_assert!(i > int_start);
        match rest[i..].chars().next() {
            None | Some(')') => {}
            Some(c) if is_ws(c) => {}
            Some(_) => return err("Invalid number literal"),
        }
        self.pos += i;
        Ok(Some(rest[..i].to_owned()))
    }

    /// A `"..."` (Go escapes) or backtick string, or `None` when there is none here.
    fn string_literal(&mut self) -> Result<Option<String>, FilterError> {
        match self.peek() {
            Some('`') => {
                let body = &self.rest()[1..];
                let Some(end) = body.find('`') else {
                    return err("Unterminated string literal");
                };
                let s = body[..end].to_owned();
                self.pos += end + 2;
                Ok(Some(s))
            }
            Some('"') => {
                let mut out = String::new();
                let mut chars = self.rest()[1..].char_indices();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            self.pos += i + 2;
                            return Ok(Some(out));
                        }
                        '\\' => {
                            let Some((_, e)) = chars.next() else {
                                break;
                            };
                            out.push(unescape(e, &mut chars)?);
                        }
                        c => out.push(c),
                    }
                }
                err("Unterminated string literal")
            }
            _ => Ok(None),
        }
    }
}

/// One Go escape after the backslash (`strconv.Unquote`).
fn unescape(e: char, chars: &mut std::str::CharIndices<'_>) -> Result<char, FilterError> {
    let mut hex = |n: usize| -> Result<char, FilterError> {
        let mut v: u32 = 0;
        for _ in 0..n {
            let d = chars
                .next()
                .and_then(|(_, c)| c.to_digit(16))
                .ok_or_else(|| FilterError("invalid escape in string literal".into()))?;
            v = v * 16 + d;
        }
        char::from_u32(v).ok_or_else(|| FilterError("invalid escape in string literal".into()))
    };
    Ok(match e {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'v' => '\u{b}',
        '\\' => '\\',
        '"' => '"',
        '\'' => '\'',
        'x' => hex(2)?,
        'u' => hex(4)?,
        'U' => hex(8)?,
        _ => return err("invalid escape in string literal"),
    })
}

fn build_match(selector: Vec<String>, op: Op, value: String) -> Result<Match, FilterError> {
    let regex = match op {
        Op::Matches | Op::NotMatches => {
            let builder = Regex::builder()
                .configure(
                    Regex::config()
                        .nfa_size_limit(Some(MAX_REGEX_SIZE))
                        .onepass_size_limit(Some(MAX_REGEX_SIZE)),
                )
                .build(&value);
            match builder {
                Ok(re) => Some(re),
                Err(e) => {
                    return err(format!(
                        "Failed to compile regular expression {value:?}: {e}"
                    ));
                }
            }
        }
        _ => None,
    };
    Ok(Match {
        selector,
        op,
        value,
        regex,
    })
}

// --- validation ----------------------------------------------------------------------------

/// Checks every match of the expression against the row shape.
fn validate_expr(expr: &Expr, shape: &Shape) -> Result<(), FilterError> {
    match expr {
        Expr::Or(terms) | Expr::And(terms) => {
            terms.iter().try_for_each(|t| validate_expr(t, shape))
        }
        Expr::Not(inner) => validate_expr(inner, shape),
        Expr::Match(m) => validate_match(m, shape),
    }
}

/// Walks the selector through the shape, then checks the operator suits the leaf.
fn validate_match(m: &Match, shape: &Shape) -> Result<(), FilterError> {
    let invalid = || FilterError(format!("Selector {:?} is not valid", m.selector_text()));
    let mut shape = shape;
    let mut depth = 0;
    while depth < m.selector.len() {
        shape = match shape {
            Shape::Struct(_) => {
                let field = shape.field(&m.selector[depth]).ok_or_else(invalid)?;
                depth += 1;
                &field.1
            }
            Shape::Map(inner) => {
                depth += 1;
                inner
            }
            // Lists are traversed implicitly: the next segment applies to each element.
            Shape::List(inner) if !matches!(inner, Shape::Str | Shape::Int | Shape::Bool) => inner,
            Shape::Any => return Ok(()),
            _ => return Err(invalid()),
        };
    }
    let op = m.op.positive();
    let ok = match shape {
        Shape::Str => true,
        Shape::Int | Shape::Bool => op == Op::Equal,
        Shape::List(_) | Shape::Map(_) => matches!(op, Op::In | Op::IsEmpty),
        Shape::Struct(_) => false,
        Shape::Any => true,
    };
    if !ok {
        return err(format!(
            "Invalid match operator {:?} for selector {:?}",
            m.op.text(),
            m.selector_text()
        ));
    }
    if let Shape::Int = shape {
        parse_number(&m.value)?;
    }
    if let Shape::Bool = shape {
        parse_bool(&m.value)?;
    }
    Ok(())
}

// --- evaluation ----------------------------------------------------------------------------

/// Evaluates an expression over one row, short-circuiting `and`/`or`.
fn eval(expr: &Expr, row: &Value, shape: &Shape) -> Result<bool, FilterError> {
    match expr {
        Expr::Or(terms) => {
            for t in terms {
                if eval(t, row, shape)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Expr::And(terms) => {
            for t in terms {
                if !eval(t, row, shape)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Expr::Not(inner) => Ok(!eval(inner, row, shape)?),
        Expr::Match(m) => {
            let positive = find(m, 0, Some(row), shape)?;
            Ok(positive != m.op.negated())
        }
    }
}

/// The positive form of the match at `path[depth..]` below `value` (of `shape`); `None`
/// is a struct field the row leaves out (read as its zero value).
fn find(
    m: &Match,
    depth: usize,
    value: Option<&Value>,
    shape: &Shape,
) -> Result<bool, FilterError> {
    let value = value.filter(|v| !v.is_null());
    if depth == m.selector.len() {
        return leaf(m, value, shape);
    }
    let segment = m.selector[depth].as_str();
    match shape {
        Shape::Struct(_) => match shape.field(segment) {
            Some(field) => find(m, depth + 1, value.and_then(|v| v.get(field.0)), &field.1),
            None => Ok(false),
        },
        Shape::Map(inner) => match value.and_then(|v| v.get(segment)) {
            Some(child) => find(m, depth + 1, Some(child), inner),
            // A key that is not there equals nothing, holds nothing and is empty.
            None => Ok(m.op.positive() == Op::IsEmpty),
        },
        Shape::List(inner) => {
            for item in value.and_then(Value::as_array).into_iter().flatten() {
                if find(m, depth, Some(item), inner)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Shape::Any => {
            let child = match value {
                Some(Value::Array(items)) => {
                    for item in items {
                        if find(m, depth, Some(item), &Shape::Any)? {
                            return Ok(true);
                        }
                    }
                    return Ok(false);
                }
                Some(v) => v.get(segment),
                None => None,
            };
            match child {
                Some(c) => find(m, depth + 1, Some(c), &Shape::Any),
                None => Ok(m.op.positive() == Op::IsEmpty),
            }
        }
        Shape::Str | Shape::Int | Shape::Bool => Ok(false),
    }
}

fn parse_number(raw: &str) -> Result<f64, FilterError> {
    raw.trim().parse::<f64>().map_err(|_| {
        FilterError(format!(
            "error getting match value in expression: {raw:?} is not a number"
        ))
    })
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(raw: &str) -> Result<bool, FilterError> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => err(format!(
            "error getting match value in expression: {raw:?} is not a boolean"
        )),
    }
}

/// Equality of a scalar JSON value with the raw match value, coerced to the value's type.
fn scalar_equals(v: Option<&Value>, shape: &Shape, raw: &str) -> Result<bool, FilterError> {
    match (shape, v) {
        (Shape::Int, _) => {
            let have = v.and_then(Value::as_f64).unwrap_or(0.0);
            Ok(have == parse_number(raw)?)
        }
        (Shape::Bool, _) => Ok(v.and_then(Value::as_bool).unwrap_or(false) == parse_bool(raw)?),
        (_, Some(Value::Number(n))) => Ok(raw
            .trim()
            .parse::<f64>()
            .is_ok_and(|r| n.as_f64() == Some(r))),
        (_, Some(Value::Bool(b))) => Ok(parse_bool(raw).is_ok_and(|r| r == *b)),
        (_, Some(Value::String(s))) => Ok(s == raw),
        (_, None) => Ok(raw.is_empty() && matches!(shape, Shape::Str)),
        (_, Some(_)) => Ok(false),
    }
}

/// The positive operator applied to the value a selector reached.
fn leaf(m: &Match, v: Option<&Value>, shape: &Shape) -> Result<bool, FilterError> {
    let op = m.op.positive();
    match shape {
        Shape::List(inner) => {
            let items = v.and_then(Value::as_array);
            match op {
                Op::IsEmpty => Ok(items.is_none_or(|i| i.is_empty())),
                Op::In => {
                    for item in items.into_iter().flatten() {
                        if scalar_equals(Some(item), inner, &m.value)? {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                }
                _ => Ok(false),
            }
        }
        Shape::Map(_) | Shape::Struct(_) => {
            let map = v.and_then(Value::as_object);
            match op {
                Op::IsEmpty => Ok(map.is_none_or(|m| m.is_empty())),
                Op::In => Ok(map.is_some_and(|map| map.contains_key(&m.value))),
                _ => Ok(false),
            }
        }
        Shape::Any => match v {
            Some(Value::Array(_)) => leaf(m, v, &Shape::List(&Shape::Any)),
            Some(Value::Object(_)) => leaf(m, v, &Shape::Map(&Shape::Any)),
            Some(Value::String(_)) | None => leaf(m, v, &Shape::Str),
            Some(_) => match op {
                Op::Equal => scalar_equals(v, &Shape::Any, &m.value),
                _ => Ok(false),
            },
        },
        Shape::Int | Shape::Bool => match op {
            Op::Equal => scalar_equals(v, shape, &m.value),
            _ => Ok(false),
        },
        Shape::Str => {
            let s = v.and_then(Value::as_str).unwrap_or("");
            Ok(match op {
                Op::Equal => s == m.value,
                Op::In => s.contains(m.value.as_str()),
                Op::IsEmpty => s.is_empty(),
                Op::Matches => m.regex.as_ref().is_some_and(|re| re.is_match(s)),
                _ => false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::{CHECK_SERVICE_NODE, HEALTH_CHECK, NODE};
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn csn(tags: &[&str], statuses: &[&str]) -> Value {
        json!({
            "Node": {"ID": "x", "Node": "db1", "Address": "10.0.0.1", "Datacenter": "dc1",
                     "TaggedAddresses": {"lan": "10.0.0.1"}, "Meta": {"rack": "a", "env": ""},
                     "CreateIndex": 5, "ModifyIndex": 7},
            "Service": {"ID": "galeradb", "Service": "galeradb", "Tags": tags, "Address": "",
                        "TaggedAddresses": {}, "Meta": {"version": "10.4"}, "Port": 3306,
                        "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false,
                        "CreateIndex": 5, "ModifyIndex": 5},
            "Checks": statuses.iter().enumerate().map(|(i, s)| json!({
                "Node": "db1", "CheckID": format!("c{i}"), "Name": "n", "Status": s,
                "Notes": "", "Output": "", "ServiceID": "galeradb", "ServiceName": "galeradb",
                "ServiceTags": [], "Type": "tcp", "Interval": "10s", "Timeout": "1s",
                "Definition": {"TCP": "localhost:3306"}, "CreateIndex": 1, "ModifyIndex": 1
            })).collect::<Vec<_>>()
        })
    }

    fn check(expr: &str, row: &Value) -> bool {
        let f = Filter::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        f.validate(&CHECK_SERVICE_NODE)
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        f.matches(row, &CHECK_SERVICE_NODE).unwrap()
    }

    #[test]
    fn consul_documentation_examples() {
        let healthy = csn(&["icinga-galera", "primary"], &["passing", "passing"]);
        let sick = csn(&["icinga-galera"], &["passing", "critical"]);
        let e = r#"Service.Tags contains "icinga-galera" and Checks.Status != "critical""#;
        assert!(check(e, &healthy));
        assert!(!check(e, &sick));
        assert!(check(r#"Checks.Status == "critical""#, &sick));
        assert!(check(r#""primary" in Service.Tags"#, &healthy));
        assert!(check(r#""primary" not in Service.Tags"#, &sick));
        assert!(check(r#"Service.Tags not contains "primary""#, &sick));
        assert!(check(r#"Node.Meta.rack == "a""#, &healthy));
        assert!(check(r#"Node.Meta["rack"] == `a`"#, &healthy));
        assert!(check(
            r#"Service.Meta["version"] matches "^10\\.""#,
            &healthy
        ));
        assert!(check(r#"Service.Meta.version not matches "^11""#, &healthy));
        assert!(check("Service.Port == 3306", &healthy));
        assert!(check("Service.Port != 3307", &healthy));
        assert!(check("Service.EnableTagOverride == false", &healthy));
        assert!(check("Checks.Definition.TCP == `localhost:3306`", &healthy));
        assert!(check("Service.Service == galeradb", &healthy));
        assert!(check(r#"Node.Node contains "db""#, &healthy));
        assert!(check(
            r#"Node.Meta is not empty and Service.Address is empty"#,
            &healthy
        ));
    }

    #[test]
    fn logic_precedence_parentheses_and_not() {
        let row = csn(&["a"], &["passing"]);
        assert!(check(
            r#"Service.Port == 1 or Service.Port == 3306 and Node.Node == "db1""#,
            &row
        ));
        assert!(!check(
            r#"(Service.Port == 1 or Service.Port == 3306) and Node.Node == "x""#,
            &row
        ));
        assert!(check(r#"not Service.Port == 1"#, &row));
        assert!(check(r#"not not Service.Port == 3306"#, &row));
        assert!(check(
            r#"not (Service.Port == 1 or Node.Node == "x")"#,
            &row
        ));
        assert!(check("( Service.Port == 3306 )", &row));
    }

    #[test]
    fn missing_map_keys_and_empty_collections() {
        let row = csn(&[], &[]);
        assert!(!check(r#"Node.Meta.missing == "x""#, &row));
        assert!(check(r#"Node.Meta.missing != "x""#, &row));
        assert!(check("Node.Meta.missing is empty", &row));
        assert!(!check("Node.Meta.missing is not empty", &row));
        assert!(check("Node.Meta.env is empty", &row));
        assert!(check("Service.Tags is empty", &row));
        assert!(check("Checks is empty", &row));
        assert!(check(r#""rack" in Node.Meta"#, &row));
        assert!(!check(r#"Checks.Status == "passing""#, &row));
        assert!(check(r#"Checks.Status != "critical""#, &row));
    }

    #[test]
    fn bad_expressions_have_reasons() {
        for (expr, want) in [
            ("Service.Tags ==", "expected a value"),
            ("(Service.Port == 1", "Unmatched parentheses"),
            (r#"Service.Name == "x"#, "Unterminated string literal"),
            ("Service.Port == 10s", "Invalid number literal"),
            ("Node.Meta[1] == x", "Invalid index"),
            (r#"Node.Meta["a" == x"#, "Unclosed index expression"),
            ("Service.Port = 1", "expected a match operator"),
            (r#""a" in "b""#, "Invalid selector"),
            ("Service.Port == 1 junk", "unexpected input"),
            (r#"Service.Service matches "(""#, "Failed to compile"),
        ] {
            let e = Filter::parse(expr).expect_err(expr);
            assert!(e.0.contains(want), "{expr}: {e}");
        }
        let deep = format!("{}Service.Port == 1{}", "(".repeat(40), ")".repeat(40));
        assert!(
            Filter::parse(&deep)
                .unwrap_err()
                .0
                .contains("nested too deeply")
        );
        assert!(Filter::parse(&"a".repeat(MAX_FILTER_LEN + 1)).is_err());
        let long = format!("{} == 1", vec!["a"; 40].join("."));
        assert!(Filter::parse(&long).unwrap_err().0.contains("segments"));
    }

    #[test]
    fn validation_names_bad_selectors_and_operators() {
        let v = |e: &str| {
            Filter::parse(e)
                .unwrap()
                .validate(&CHECK_SERVICE_NODE)
                .map_err(|e| e.0)
        };
        assert_eq!(
            v("Bogus == 1").unwrap_err(),
            r#"Selector "Bogus" is not valid"#
        );
        assert_eq!(
            v("Service.Tags == x").unwrap_err(),
            r#"Invalid match operator "==" for selector "Service.Tags""#
        );
        assert!(v("Service.Port contains 1").is_err());
        assert!(
            v("Service.Port == abc")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(v("Service.EnableTagOverride == maybe").is_err());
        assert!(v("Service.Service.X == 1").is_err());
        assert!(v("Node is empty").is_err());
        assert!(v("Checks.ServiceTags contains x").is_ok());
        let nodes = Filter::parse(r#"Meta.rack == "a" and TaggedAddresses.lan != """#).unwrap();
        nodes.validate(&NODE).unwrap();
        let hc = Filter::parse(r#"Status == passing and Definition.Header.X contains y"#).unwrap();
        hc.validate(&HEALTH_CHECK).unwrap();
    }

    #[test]
    fn keywords_are_whole_words() {
        // `notes` is not `not es`, `inside` is not `in side`.
        let f = Filter::parse(r#"Notes == "x""#).unwrap();
        f.validate(&HEALTH_CHECK).unwrap();
        assert!(f.matches(&json!({"Notes": "x"}), &HEALTH_CHECK).unwrap());
        assert!(Filter::parse(r#""x" inside Notes"#).is_err());
        assert!(Filter::parse(r#"Status == passing andNotes == x"#).is_err());
    }

    fn arb_expr() -> impl Strategy<Value = String> {
        let selector = prop::sample::select(vec![
            "Service.Tags",
            "Checks.Status",
            "Node.Meta.rack",
            "Node.Meta[\"env\"]",
            "Service.Port",
            "Service.EnableTagOverride",
            "Checks",
            "Service.Service",
            "Bogus.X",
        ]);
        let value = prop::sample::select(vec![
            "\"passing\"",
            "`a`",
            "3306",
            "-1.5",
            "true",
            "x",
            "\"\\u00e9\"",
        ]);
        let op = prop::sample::select(vec![
            "==",
            "!=",
            "contains",
            "not contains",
            "matches",
            "not matches",
        ]);
        let leaf = (
            selector.clone(),
            op,
            value.clone(),
            prop::bool::ANY,
            selector,
            value,
        )
            .prop_map(|(s, o, v, empty, s2, v2)| {
                if empty {
                    format!("{s} is not empty or {v2} in {s2}")
                } else {
                    format!("{s} {o} {v}")
                }
            });
        leaf.prop_recursive(4, 16, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or {b}")),
                inner.prop_map(|a| format!("not ({a})")),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(input in ".{0,200}") {
            if let Ok(f) = Filter::parse(&input) {
                let _ = f.validate(&CHECK_SERVICE_NODE);
                let _ = f.matches(&csn(&["a"], &["passing"]), &CHECK_SERVICE_NODE);
                let _ = f.matches(&json!(null), &CHECK_SERVICE_NODE);
            }
        }

        #[test]
        fn never_panics_on_structured_input(expr in arb_expr(), cut in 0usize..400) {
            let row = csn(&["a", "b"], &["passing", "critical"]);
            for input in [expr.as_str(), &expr[..expr.floor_char_boundary(cut.min(expr.len()))]] {
                if let Ok(f) = Filter::parse(input) {
                    if f.validate(&CHECK_SERVICE_NODE).is_ok() {
                        let _ = f.matches(&row, &CHECK_SERVICE_NODE);
                    }
                    let _ = f.matches(&json!({"Checks": 3, "Service": [1, {"Tags": 2}]}), &CHECK_SERVICE_NODE);
                }
            }
        }
    }
}
