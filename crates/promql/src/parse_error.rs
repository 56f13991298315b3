//! Prometheus-style parse error text (`line:col: parse error: msg`).
//!
//! promql-parser reports no positions, and for most grammar errors only "invalid promql
//! query". A small lexer and a structural checker over its tokens recover what
//! Prometheus reports: the position of the offending token and `unexpected <token>`.

/// Words the Prometheus lexer turns into aggregator tokens.
const AGGREGATORS: &[&str] = &[
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "start",
    "end",
];
const WORD_OPERATORS: &[&str] = &["and", "or", "unless", "atan2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    Duration,
    Str,
    /// A symbolic operator: + - * / % ^ == != > < >= <= = =~ !~
    Op,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    At,
    Eof,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    pos: usize,
    text: &'a str,
}

impl Token<'_> {
    fn is_word(&self, words: &[&str]) -> bool {
        self.kind == Kind::Ident && words.contains(&self.text.to_ascii_lowercase().as_str())
    }
    fn is_binary_op(&self) -> bool {
        (self.kind == Kind::Op && self.text != "=" && self.text != "=~" && self.text != "!~")
            || self.is_word(WORD_OPERATORS)
    }

    /// Prometheus's `Item.desc()`: how an unexpected token is named in messages.
    fn desc(&self) -> String {
        let lower = self.text.to_ascii_lowercase();
        match self.kind {
            Kind::Eof => "end of input".into(),
            Kind::Op => format!("<op:{}>", self.text),
            Kind::Ident if WORD_OPERATORS.contains(&lower.as_str()) => format!("<op:{}>", self.text),
            Kind::Ident if KEYWORDS.contains(&lower.as_str()) => format!("<{}>", self.text),
            Kind::Ident if AGGREGATORS.contains(&lower.as_str()) => format!("<aggr:{}>", self.text),
            Kind::Ident => format!("identifier {:?}", self.text),
            Kind::Number => format!("number {}", go_quote(self.text)),
            Kind::Duration => format!("duration {}", go_quote(self.text)),
            Kind::Str => format!("string {}", go_quote(self.text)),
            Kind::At => "<op:@>".into(),
            _ => format!("{:?}", self.text),
        }
    }
}

/// Go's `%q` with Prometheus's truncation of long token texts (`%.10q...`).
fn go_quote(s: &str) -> String {
    if s.chars().count() > 10 {
        let short: String = s.chars().take(10).collect();
        format!("{short:?}...")
    } else {
        format!("{s:?}")
    }
}

/// A lexing failure: byte position and Prometheus's message.
type LexError = (usize, String);

fn lex(src: &str) -> Result<Vec<Token<'_>>, LexError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Open brackets, to report unbalanced closers where they are.
    let mut open: Vec<u8> = Vec::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' | b'`' => {
                i += 1;
                loop {
                    if i >= b.len() {
                        return Err((start, "unterminated quoted string".into()));
                    }
                    if b[i] == b'\\' && c != b'`' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\n' && c != b'`' {
                        return Err((start, "unterminated quoted string".into()));
                    }
                    i += 1;
                    if b[i - 1] == c {
                        break;
                    }
                }
                Kind::Str
            }
            b'(' | b'{' | b'[' => {
                open.push(c);
                i += 1;
                match c {
                    b'(' => Kind::LParen,
                    b'{' => Kind::LBrace,
                    _ => Kind::LBracket,
                }
            }
            b')' | b'}' | b']' => {
                let (want, name, kind) = match c {
                    b')' => (b'(', "right parenthesis", Kind::RParen),
                    b'}' => (b'{', "right brace", Kind::RBrace),
                    _ => (b'[', "right bracket", Kind::RBracket),
                };
                if open.pop() != Some(want) {
                    return Err((start, format!("unexpected {name} '{}'", c as char)));
                }
                i += 1;
                kind
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b':' if open.last() == Some(&b'[') => {
                i += 1;
                Kind::Colon
            }
            b'@' => {
                i += 1;
                Kind::At
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => {
                i += 1;
                Kind::Op
            }
            b'=' | b'!' | b'<' | b'>' => {
                i += 1;
                if i < b.len() && (b[i] == b'=' || (b[i] == b'~' && (c == b'=' || c == b'!'))) {
                    i += 1;
                } else if c == b'!' {
                    let place = if open.last() == Some(&b'{') {
                        " inside braces"
                    } else {
                        ""
                    };
                    return Err((
                        start,
                        format!("unexpected character after '!'{place}: {:?}", next_char(src, i)),
                    ));
                }
                Kind::Op
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || ((b[i] == b'+' || b[i] == b'-')
                            && matches!(b[i - 1], b'e' | b'E')
                            && !is_hex(&src[start..i])))
                {
                    i += 1;
                }
                let t = &src[start..i];
                if is_number(t) {
                    Kind::Number
                } else if model::duration::parse_duration(t).is_ok() {
                    Kind::Duration
                } else {
                    return Err((start, format!("bad number or duration syntax: {t:?}")));
                }
            }
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                    i += 1;
                }
                let t = &src[start..i];
                if matches!(t.to_ascii_lowercase().as_str(), "inf" | "nan") {
                    Kind::Number
                } else {
                    Kind::Ident
                }
            }
            _ => {
                let ch = next_char(src, i);
                let place = match open.last() {
                    Some(b'{') => " inside braces",
                    Some(b'[') => " inside brackets",
                    _ => "",
                };
                return Err((start, format!("unexpected character{place}: {ch:?}")));
            }
        };
        out.push(Token {
            kind,
            pos: start,
            text: &src[start..i],
        });
    }
    if let Some(&c) = open.last() {
        let what = match c {
            b'(' => "unclosed left parenthesis",
            b'{' => "unexpected end of input inside braces",
            _ => "unexpected end of input inside brackets",
        };
        return Err((src.len(), what.into()));
    }
    out.push(Token {
        kind: Kind::Eof,
        pos: src.len(),
        text: "",
    });
    Ok(out)
}

fn next_char(src: &str, i: usize) -> char {
    src[i..].chars().next().unwrap_or(' ')
}

fn is_hex(t: &str) -> bool {
    t.len() > 1 && (t.starts_with("0x") || t.starts_with("0X"))
}

fn is_number(t: &str) -> bool {
    if is_hex(t) {
        return i64::from_str_radix(&t[2..], 16).is_ok();
    }
    t.parse::<f64>().is_ok() && !t.contains(['i', 'I', 'n', 'N'])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// `( expr )`
    Paren,
    /// `f( args )` or an aggregation's `( args )`.
    Call { aggregation: bool },
}

/// Walks the tokens with a small operand/operator automaton and returns the first token
/// Prometheus's grammar would reject, with its message.
fn check(toks: &[Token<'_>]) -> Option<(usize, String)> {
    let unexpected = |t: &Token<'_>, ctx: &str| -> Option<(usize, String)> {
        Some((t.pos, format!("unexpected {}{ctx}", t.desc())))
    };
    let mut stack: Vec<Group> = Vec::new();
    let mut expect_operand = true;
    // Whether the operand just finished is an aggregation (a `by`/`without` may follow).
    let mut after_aggregation = false;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        let next = toks.get(i + 1).copied().unwrap_or(t);
        if expect_operand {
            match t.kind {
                Kind::Number | Kind::Str => expect_operand = false,
                Kind::Op if t.text == "+" || t.text == "-" => {}
                Kind::LParen => stack.push(Group::Paren),
                Kind::Ident if t.is_word(AGGREGATORS) => {
                    // op [by|without (labels)] ( args ) [by|without (labels)]
                    let mut j = i + 1;
                    if toks[j].is_word(&["by", "without"]) {
                        match grouping(toks, j + 1) {
                            Ok(k) => j = k,
                            Err(e) => return Some(e),
                        }
                    }
                    if toks[j].kind != Kind::LParen {
                        return unexpected(&toks[j], " in aggregation");
                    }
                    stack.push(Group::Call { aggregation: true });
                    i = j;
                }
                // `start`/`end` are keywords only after `@`.
                Kind::Ident if t.is_word(&KEYWORDS[..8]) || t.is_word(WORD_OPERATORS) => return unexpected(&t, ""),
                Kind::Ident if next.kind == Kind::LParen => {
                    i += 1;
                    if toks[i + 1].kind == Kind::RParen {
                        // `f()`: an empty argument list is a complete operand.
                        i += 2;
                        expect_operand = false;
                        continue;
                    }
                    stack.push(Group::Call { aggregation: false });
                }
                Kind::Ident | Kind::LBrace => {
                    let brace = match (t.kind, next.kind) {
                        (Kind::LBrace, _) => Some(i),
                        (_, Kind::LBrace) => Some(i + 1),
                        _ => None,
                    };
                    i = match brace {
                        Some(b) => match matchers(toks, b + 1) {
                            Ok(k) => k,
                            Err(e) => return Some(e),
                        },
                        None => i + 1,
                    };
                    expect_operand = false;
                    continue;
                }
                _ => {
                    if t.kind == Kind::RParen && i > 0 && toks[i - 1].kind == Kind::Comma {
                        return Some((
                            toks[i - 1].pos,
                            "trailing commas not allowed in function call args".into(),
                        ));
                    }
                    return unexpected(&t, "");
                }
            }
            i += 1;
            continue;
        }
        // An operand is complete; an operator, modifier or closer must follow.
        let closed_aggregation = std::mem::take(&mut after_aggregation);
        match t.kind {
            Kind::Eof if stack.is_empty() => return None,
            _ if t.is_binary_op() => {
                let mut j = i + 1;
                if toks[j].is_word(&["bool"]) {
                    j += 1;
                }
                if toks[j].is_word(&["on", "ignoring"]) {
                    match grouping(toks, j + 1) {
                        Ok(k) => j = k,
                        Err(e) => return Some(e),
                    }
                    if toks[j].is_word(&["group_left", "group_right"]) {
                        j += 1;
                        if toks[j].kind == Kind::LParen {
                            match grouping(toks, j) {
                                Ok(k) => j = k,
                                Err(e) => return Some(e),
                            }
                        }
                    }
                }
                i = j;
                expect_operand = true;
                continue;
            }
            Kind::Ident if closed_aggregation && t.is_word(&["by", "without"]) => match grouping(toks, i + 1) {
                Ok(k) => {
                    i = k;
                    continue;
                }
                Err(e) => return Some(e),
            },
            Kind::LBracket => {
                // [range] or [range:] or [range:step]
                let mut j = i + 1;
                if toks[j].kind != Kind::Duration && toks[j].kind != Kind::Number {
                    return unexpected(&toks[j], " in subquery or range selector, expected duration");
                }
                j += 1;
                if toks[j].kind == Kind::Colon {
                    j += 1;
                    if toks[j].kind == Kind::Duration || toks[j].kind == Kind::Number {
                        j += 1;
                    }
                }
                if toks[j].kind != Kind::RBracket {
                    return unexpected(&toks[j], " in subquery or range selector");
                }
                i = j + 1;
            }
            Kind::Ident if t.is_word(&["offset"]) => {
                let mut j = i + 1;
                if toks[j].kind == Kind::Op && toks[j].text == "-" {
                    j += 1;
                }
                if toks[j].kind != Kind::Duration && toks[j].kind != Kind::Number {
                    return unexpected(&toks[j], " in offset, expected duration");
                }
                i = j + 1;
            }
            Kind::At => {
                let mut j = i + 1;
                if toks[j].kind == Kind::Op && (toks[j].text == "-" || toks[j].text == "+") {
                    j += 1;
                }
                if toks[j].kind == Kind::Number {
                    i = j + 1;
                } else if toks[j].is_word(&["start", "end"])
                    && toks[j + 1].kind == Kind::LParen
                    && toks.get(j + 2).is_some_and(|x| x.kind == Kind::RParen)
                {
                    i = j + 3;
                } else {
                    return unexpected(&toks[j], " in @, expected timestamp");
                }
            }
            Kind::RParen => match stack.pop() {
                Some(Group::Call { aggregation }) => {
                    after_aggregation = aggregation;
                    i += 1;
                }
                Some(Group::Paren) => i += 1,
                None => return unexpected(&t, ""),
            },
            Kind::Comma if matches!(stack.last(), Some(Group::Call { .. })) => {
                expect_operand = true;
                i += 1;
            }
            _ => return unexpected(&t, ""),
        }
    }
    None
}

/// `( label, … )` starting at `toks[i]`; returns the index after the closing paren.
fn grouping(toks: &[Token<'_>], mut i: usize) -> Result<usize, (usize, String)> {
    if toks[i].kind != Kind::LParen {
        return Err((
            toks[i].pos,
            format!("unexpected {} in grouping opts, expected \"(\"", toks[i].desc()),
        ));
    }
    i += 1;
    loop {
        match toks[i].kind {
            Kind::RParen => return Ok(i + 1),
            Kind::Ident => {}
            _ => {
                return Err((
                    toks[i].pos,
                    format!("unexpected {} in grouping opts, expected label", toks[i].desc()),
                ))
            }
        }
        i += 1;
        match toks[i].kind {
            Kind::Comma => i += 1,
            Kind::RParen => return Ok(i + 1),
            _ => {
                return Err((
                    toks[i].pos,
                    format!(
                        "unexpected {} in grouping opts, expected \",\" or \")\"",
                        toks[i].desc()
                    ),
                ))
            }
        }
    }
}

/// `name op "value", … }` starting after `{`; returns the index after the closing brace.
fn matchers(toks: &[Token<'_>], mut i: usize) -> Result<usize, (usize, String)> {
    let err = |t: &Token<'_>, expected: &str| {
        Err((
            t.pos,
            format!("unexpected {} in label matching, expected {expected}", t.desc()),
        ))
    };
    loop {
        match toks[i].kind {
            Kind::RBrace => return Ok(i + 1),
            Kind::Ident | Kind::Str => {}
            _ => return err(&toks[i], "label matching operator"),
        }
        i += 1;
        if toks[i].kind == Kind::Comma || toks[i].kind == Kind::RBrace {
            // A bare quoted metric name (`{"foo"}`) is not v2.53 syntax; leave it to the parser.
            return Ok(i + 1);
        }
        if !(toks[i].kind == Kind::Op && matches!(toks[i].text, "=" | "!=" | "=~" | "!~")) {
            return err(&toks[i], "label matching operator");
        }
        i += 1;
        if toks[i].kind != Kind::Str {
            return err(&toks[i], "string");
        }
        i += 1;
        match toks[i].kind {
            Kind::Comma => i += 1,
            Kind::RBrace => return Ok(i + 1),
            _ => return err(&toks[i], "\",\" or \"}\""),
        }
    }
}

/// `line:col:` of a byte position, as Prometheus's ParseErr counts (columns in bytes, from 1).
fn position(src: &str, pos: usize) -> String {
    let pos = pos.min(src.len());
    let before = &src.as_bytes()[..pos];
    let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
    let col = match before.iter().rposition(|&c| c == b'\n') {
        Some(nl) => pos - nl,
        None => pos + 1,
    };
    format!("{line}:{col}:")
}

/// promql-parser's message in Prometheus's words: names quoted as Go's `%q` quotes
/// strings (single characters keep Go's rune quotes), and Prometheus's type names.
fn prometheus_wording(msg: &str) -> String {
    // Messages about single characters quote a Go rune: those keep their single quotes.
    let about_chars = ["character", "parenthesis", "bracket", "brace '", "escape sequence"]
        .iter()
        .any(|w| msg.contains(w));
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(a) = rest.find('\'') {
        out.push_str(&rest[..a]);
        let after = &rest[a + 1..];
        match after.find('\'') {
            Some(b) if !about_chars || after[..b].chars().count() != 1 => {
                out.push('"');
                out.push_str(&after[..b]);
                out.push('"');
                rest = &after[b + 1..];
            }
            Some(b) => {
                out.push_str(&rest[a..a + 1 + b + 1]);
                rest = &after[b + 1..];
            }
            None => {
                out.push_str(&rest[a..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    if out.starts_with("expected type ") {
        for (from, to) in [
            ("type matrix", "type range vector"),
            ("type vector", "type instant vector"),
            ("got matrix", "got range vector"),
            ("got vector", "got instant vector"),
        ] {
            out = out.replace(from, to);
        }
    }
    out
}

/// The tokens of the call to `func`: (position of its name, start of each argument).
fn call_args(toks: &[Token<'_>], func: &str) -> Option<(usize, Vec<usize>)> {
    let at = toks
        .windows(2)
        .position(|w| w[0].kind == Kind::Ident && w[0].text == func && w[1].kind == Kind::LParen)?;
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut arg_start = true;
    for t in &toks[at + 2..] {
        match t.kind {
            Kind::LParen | Kind::LBrace | Kind::LBracket => {
                if depth == 0 && arg_start {
                    args.push(t.pos);
                    arg_start = false;
                }
                depth += 1;
            }
            Kind::RParen | Kind::RBrace | Kind::RBracket => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            Kind::Comma if depth == 0 => arg_start = true,
            Kind::Eof => break,
            _ => {
                if depth == 0 && arg_start {
                    args.push(t.pos);
                    arg_start = false;
                }
            }
        }
    }
    Some((toks[at].pos, args))
}

/// The text between the first pair of single quotes in `msg`.
fn first_quoted(msg: &str) -> Option<&str> {
    let a = msg.find('\'')?;
    let b = msg[a + 1..].find('\'')?;
    Some(&msg[a + 1..a + 1 + b])
}

/// `line:col:` of the first duration literal in `src` longer than Go's `time.Duration`
/// (int64 nanoseconds): where Prometheus reports "duration out of range".
pub(crate) fn overflowing_duration(src: &str) -> Option<String> {
    let toks = lex(src).ok()?;
    let t = toks.iter().find(|t| {
        t.kind == Kind::Duration
            && model::duration::parse_duration(t.text).is_ok_and(|d| d.as_nanos() > i64::MAX as u128)
    })?;
    Some(position(src, t.pos))
}

/// Turns promql-parser's message for `src` into Prometheus's `line:col: parse error: msg`.
pub(crate) fn format(src: &str, msg: &str) -> String {
    let toks = match lex(src) {
        Ok(t) => t,
        // Lexing runs ahead of parsing, so a lexical fault is the first one Prometheus reports.
        Err((pos, lex_msg)) => return format!("{} parse error: {lex_msg}", position(src, pos)),
    };
    if msg == "invalid promql query" {
        if let Some((pos, m)) = check(&toks) {
            return format!("{} parse error: {m}", position(src, pos));
        }
        let first = toks.first().map(|t| t.pos).unwrap_or(0);
        return format!("{} parse error: unexpected {}", position(src, first), toks[0].desc());
    }
    let pos = locate(src, &toks, msg);
    format!("{} parse error: {}", position(src, pos), prometheus_wording(msg))
}

/// Where Prometheus reports a semantic error: the offending node's start.
fn locate(src: &str, toks: &[Token<'_>], msg: &str) -> usize {
    if msg.contains("end of input") || msg.starts_with("unclosed") {
        return src.len();
    }
    if let Some(name) = msg
        .split("call to function '")
        .nth(1)
        .or_else(|| msg.split("call to '").nth(1))
        .and_then(|rest| rest.split('\'').next())
    {
        if let Some((fpos, args)) = call_args(toks, name) {
            if msg.starts_with("expected type ") {
                // The offending argument is the first whose own type is the one reported.
                let got = msg.rsplit("got ").next().unwrap_or("");
                for (k, &start) in args.iter().enumerate() {
                    let end = args.get(k + 1).map(|&e| e - 1).unwrap_or(src.len());
                    let text = src[start..end.max(start)].trim_end().trim_end_matches([',', ')']);
                    let ty = promql_parser::parser::parse(text).map(|e| e.value_type().to_string());
                    if ty.is_ok_and(|t| t == got) {
                        return start;
                    }
                }
            }
            return fpos;
        }
    }
    if let Some(q) = first_quoted(msg) {
        if let Some(t) = toks
            .iter()
            .find(|t| t.text == q || (t.kind == Kind::Str && t.text.contains(q)))
        {
            return t.pos;
        }
    }
    // Errors about the whole expression (its type, say) are reported at its start.
    if let Some((pos, _)) = check(toks) {
        return pos;
    }
    toks.first().map(|t| t.pos).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        match crate::parse(q) {
            Err(crate::PromqlError::Parse(m)) => m,
            other => panic!("{q}: expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn grammar_errors_name_the_unexpected_token_and_its_position() {
        assert_eq!(err("1 * * 2"), "1:5: parse error: unexpected <op:*>");
        assert_eq!(err("a b"), "1:3: parse error: unexpected identifier \"b\"");
        assert_eq!(err("1 +"), "1:4: parse error: unexpected end of input");
        assert_eq!(err("rate(foo[5m]) + "), "1:17: parse error: unexpected end of input");
        assert_eq!(
            err("sum(foo) by"),
            "1:12: parse error: unexpected end of input in grouping opts, expected \"(\""
        );
        assert_eq!(
            err("foo @ bar"),
            "1:7: parse error: unexpected identifier \"bar\" in @, expected timestamp"
        );
        assert_eq!(
            err("sum without"),
            "1:12: parse error: unexpected end of input in grouping opts, expected \"(\""
        );
        assert_eq!(err("foo offset 5m ("), "1:16: parse error: unclosed left parenthesis");
        assert_eq!(
            err("sum foo"),
            "1:5: parse error: unexpected identifier \"foo\" in aggregation"
        );
        // Positions count lines and bytes within the line.
        assert_eq!(err("sum(rate(x[5m]))\n  * * 2"), "2:5: parse error: unexpected <op:*>");
    }

    #[test]
    fn lexer_errors_carry_their_position() {
        assert_eq!(err("sum("), "1:5: parse error: unclosed left parenthesis");
        assert_eq!(err("foo)"), "1:4: parse error: unexpected right parenthesis ')'");
        assert_eq!(err("foo $ bar"), "1:5: parse error: unexpected character: '$'");
        assert_eq!(err("foo{"), "1:5: parse error: unexpected end of input inside braces");
        assert_eq!(err("x + \"abc"), "1:5: parse error: unterminated quoted string");
        assert_eq!(
            err("foo[5x]"),
            "1:5: parse error: bad number or duration syntax: \"5x\""
        );
    }

    #[test]
    fn semantic_errors_point_at_the_offending_node() {
        assert_eq!(
            err("rate(foo)"),
            "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector"
        );
        assert_eq!(
            err("1 + xyz(a)"),
            "1:5: parse error: unknown function with name \"xyz\""
        );
        assert_eq!(
            err("sum(histogram_quantile(0.9))"),
            "1:5: parse error: expected 2 argument(s) in call to \"histogram_quantile\", got 1"
        );
        assert_eq!(
            err("foo{a=~b}"),
            "1:8: parse error: unexpected identifier \"b\" in label matching, expected string"
        );
    }

    #[test]
    fn valid_queries_pass_the_checker() {
        for q in [
            "sum by (job) (rate(http_requests_total{job=~\"a.*\", code!=\"500\"}[5m] offset -1m))",
            "histogram_quantile(0.9, sum without (instance) (rate(x_bucket[5m:30s] @ start())))",
            "a / on(job) group_left(x) b > bool 2 or -c unless d atan2 e",
            "topk(3, x) by (a) ^ 2 % 3",
            "time() - vector(1) @ 100 + {__name__=\"x\"}",
            "count_values(\"v\", x) and x[5m:] # comment",
            "label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\") == 0x1f + 1e3 - Inf",
        ] {
            let toks = lex(q).unwrap_or_else(|e| panic!("{q}: {e:?}"));
            assert_eq!(check(&toks), None, "{q}");
        }
    }
}
