//! Parsing: promql-parser plus the fixes and checks Prometheus v2.53 semantics need.

use promql_parser::parser::Expr;

use crate::{parse_error, PromqlError};

/// The deepest expression accepted: an upper bound on the depth of its syntax tree
/// ([`nesting_bound`]). Prometheus answers `1+1+…+1` with 10,000 terms; so do we.
pub const MAX_NESTING: usize = 20_000;

/// Stack a thread needs to parse, evaluate and drop an expression whose [`nesting_bound`]
/// is `bound`. Parsing, planning, evaluation and dropping the tree all recurse once per
/// level. Measured per level of the deepest shapes (nested calls, nested subqueries):
/// at most ~1.7 KB in release builds and ~10 KB in debug builds (whose frames give every
/// local its own slot); the figures below leave room over those. The tests in
/// `bounds_tests` evaluate 10,000-level expressions on exactly this much stack. Only the
/// pages a query touches are committed, so shallow queries cost little.
pub fn stack_size_for(bound: usize) -> usize {
    const BASE: usize = 2 << 20;
    const PER_LEVEL: usize = if cfg!(debug_assertions) { 16 << 10 } else { 4 << 10 };
    BASE + bound.min(MAX_NESTING) * PER_LEVEL
}

/// An upper bound on the depth of `expr`'s syntax tree, from its text, without parsing.
///
/// Every node on a root-to-leaf path owns a token the scan counts: an operator (binary or
/// unary), or a bracket (`(` of a call, aggregation or parenthesis, `[` of a range or
/// subquery) still open at the leaf. So the depth is at most the deepest bracket nesting
/// plus the number of operators. Strings, comments and label matchers (`{…}`) hold no
/// expressions and are skipped. Linear time, no recursion: safe on any input.
pub fn nesting_bound(expr: &str) -> usize {
    let b = expr.as_bytes();
    let (mut i, mut open, mut deepest, mut operators) = (0usize, 0usize, 0usize, 0usize);
    let mut in_braces = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => in_braces = true,
            b'}' => in_braces = false,
            _ if in_braces => {}
            b'(' | b'[' => {
                open += 1;
                deepest = deepest.max(open);
            }
            b')' | b']' => open = open.saturating_sub(1),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' => operators += 1,
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                    i += 1;
                }
                let word = &expr[start..i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    operators += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    deepest.saturating_add(operators).saturating_add(1)
}

/// The [`nesting_bound`] of `expr`, or the parse error [`parse`] answers when it is past
/// [`MAX_NESTING`]. Cheap and non-recursive: callers use it to size the stack to parse on.
pub fn check_nesting(expr: &str) -> Result<usize, PromqlError> {
    let bound = nesting_bound(expr);
    if bound > MAX_NESTING {
        return Err(too_deep(bound));
    }
    Ok(bound)
}

/// The error for an expression deeper than [`MAX_NESTING`].
fn too_deep(bound: usize) -> PromqlError {
    PromqlError::Parse(format!(
        "parse error: expression nested too deeply: up to {bound} levels of operators, \
         parentheses and calls, the limit is {MAX_NESTING}"
    ))
}

/// Parses a PromQL expression. Backtick raw strings are rewritten to double-quoted strings
/// first, because promql-parser mis-reads escapes inside them.
///
/// Expressions deeper than [`MAX_NESTING`] are refused before parsing. The parser, and
/// everything that walks the tree, recurses once per level: call this (and evaluate and
/// drop the result) on a thread with [`stack_size_for`] bytes of stack.
pub fn parse(expr: &str) -> Result<Expr, PromqlError> {
    check_nesting(expr)?;
    register_functions();
    let src = rewrite_raw_strings(expr);
    let ast = promql_parser::parser::parse(&src).map_err(|msg| PromqlError::Parse(parse_error_text(&src, &msg)))?;
    check_tree(&ast).map_err(|e| match e {
        // The tree has no positions; the lexer finds the literal Prometheus points at.
        PromqlError::Parse(m) if m == DURATION_OUT_OF_RANGE => match parse_error::overflowing_duration(&src) {
            Some(pos) => PromqlError::Parse(format!("{pos} {m}")),
            None => PromqlError::Parse(m),
        },
        e => e,
    })?;
    Ok(ast)
}

/// Prometheus's `line:col: parse error: msg` text for a promql-parser error.
fn parse_error_text(src: &str, msg: &str) -> String {
    parse_error::format(src, msg)
}

const DURATION_OUT_OF_RANGE: &str = "parse error: duration out of range";

/// What the parser accepts but Prometheus v2.53 refuses: `{a="1" or b="2"}` (v3 syntax) and
/// durations that don't fit Go's `time.Duration` (int64 nanoseconds, ~292 years), which
/// would otherwise reach the evaluator as absurd offsets and ranges.
fn check_tree(e: &Expr) -> Result<(), PromqlError> {
    fn duration(d: &std::time::Duration) -> Result<(), PromqlError> {
        if d.as_nanos() > i64::MAX as u128 {
            return Err(PromqlError::Parse(DURATION_OUT_OF_RANGE.into()));
        }
        Ok(())
    }
    fn offset(o: &Option<promql_parser::parser::Offset>) -> Result<(), PromqlError> {
        match o {
            Some(promql_parser::parser::Offset::Pos(d) | promql_parser::parser::Offset::Neg(d)) => duration(d),
            None => Ok(()),
        }
    }
    fn selector(vs: &promql_parser::parser::VectorSelector) -> Result<(), PromqlError> {
        if !vs.matchers.or_matchers.is_empty() {
            return Err(PromqlError::Parse(
                "parse error: 'or' inside a label matcher list is not supported".into(),
            ));
        }
        offset(&vs.offset)
    }
    match e {
        Expr::VectorSelector(vs) => selector(vs),
        Expr::MatrixSelector(ms) => {
            duration(&ms.range)?;
            selector(&ms.vs)
        }
        Expr::Subquery(sq) => {
            duration(&sq.range)?;
            if let Some(step) = &sq.step {
                duration(step)?;
            }
            offset(&sq.offset)?;
            check_tree(&sq.expr)
        }
        Expr::Aggregate(a) => {
            check_tree(&a.expr)?;
            a.param.as_ref().map_or(Ok(()), |p| check_tree(p))
        }
        Expr::Unary(u) => check_tree(&u.expr),
        Expr::Binary(b) => {
            check_tree(&b.lhs)?;
            check_tree(&b.rhs)
        }
        Expr::Paren(p) => check_tree(&p.expr),
        Expr::Call(c) => c.args.args.iter().try_for_each(|a| check_tree(a)),
        _ => Ok(()),
    }
}

/// `holt_winters` is the v2 name of `double_exponential_smoothing`; the parser only knows the new one.
fn register_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::value::ValueType;
        let _ = promql_parser::parser::register_extra_functions(vec![promql_parser::parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Rewrites each `raw` string (outside other strings and comments) as an escaped "…" string.
pub fn rewrite_raw_strings(expr: &str) -> String {
    if !expr.contains('`') {
        return expr.to_string();
    }
    let mut out = String::with_capacity(expr.len() + 8);
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == c {
                        break;
                    }
                }
            }
            '#' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '`' => {
                out.push('"');
                for d in chars.by_ref() {
                    match d {
                        '`' => break,
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        _ => out.push(d),
                    }
                }
                out.push('"');
            }
            _ => out.push(c),
        }
    }
    out
}
