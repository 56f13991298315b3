//! Label and annotation templates in Prometheus's dialect of Go's `text/template`.
//!
//! No maintained Rust crate implements Go templates with Go's number formatting
//! (`gtmpl` 0.7 is unmaintained since 2021 and its `printf` is incomplete), so this is a
//! small interpreter for the subset alerting rules use:
//!
//! - text and `{{ pipeline }}` actions, `{{-`/`-}}` trimming, `{{/* comments */}}`;
//! - `{{ if p }} … {{ else if p }} … {{ else }} … {{ end }}`;
//! - operands: `$labels.x`, `$value`, `$externalLabels.x`, `$externalURL`, `.Labels.x`,
//!   `.Value`, `.ExternalLabels.x`, `.ExternalURL`, `$`, strings (`"…"`, `` `…` ``),
//!   numbers, `true`/`false`, parenthesised pipelines, `|` chains;
//! - functions: Prometheus's `humanize`, `humanize1024`, `humanizeDuration`,
//!   `humanizePercentage`, `humanizeTimestamp`, `toUpper`, `toLower`, `title`, `match`,
//!   `reReplaceAll`, `stripPort`, `printf`, and Go's `print`, `eq`, `ne`, `lt`, `le`,
//!   `gt`, `ge`, `and`, `or`, `not`, `len`, `index`.
//!
//! `query`, `first`, `label`, `value`, `sortByLabel`, `strvalue`, `graphLink`,
//! `tableLink`, `safeHtml`, `pathPrefix`, `tmpl` and `args` parse and give an empty
//! string (the alert-generator spec allows this for the optional ones). `range`,
//! `with`, `define` and variable assignment are refused at parse time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a template did not parse or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(m.into()))
}

/// What a template sees.
#[derive(Debug, Clone, Default)]
pub struct TemplateData<'a> {
    pub labels: BTreeMap<&'a str, &'a str>,
    pub value: f64,
    pub external_labels: BTreeMap<&'a str, &'a str>,
    pub external_url: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

type Pipeline = Vec<Command>;
type Command = Vec<Operand>;

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `.A.b` (empty path = `.`)
    Field(Vec<String>),
    /// `$name.a.b` (`$` alone = name "")
    Var(String, Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Func(String),
    Sub(Pipeline),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    Map(BTreeMap<String, String>),
    Nil,
}

impl Val {
    fn truth(&self) -> bool {
        match self {
            Val::Str(s) => !s.is_empty(),
            Val::Num(n) => *n != 0.0,
            Val::Bool(b) => *b,
            Val::Map(m) => !m.is_empty(),
            Val::Nil => false,
        }
    }
    fn print(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(n) => format_g(*n, None),
            Val::Bool(b) => b.to_string(),
            Val::Map(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("map[{}]", parts.join(" "))
            }
            Val::Nil => "<no value>".into(),
        }
    }
    fn to_float(&self) -> Result<f64, TemplateError> {
        match self {
            Val::Num(n) => Ok(*n),
            Val::Str(s) => s
                .trim()
                .parse::<f64>()
                .or_else(|_| match s.trim() {
                    "+Inf" | "Inf" => Ok(f64::INFINITY),
                    "-Inf" => Ok(f64::NEG_INFINITY),
                    "NaN" => Ok(f64::NAN),
                    _ => Err(()),
                })
                .or_else(|_| err(format!("cannot convert {s:?} to float"))),
            other => err(format!("cannot convert {} to float", other.print())),
        }
    }
}

const OPTIONAL_FUNCS: &[&str] = &[
    "query",
    "first",
    "label",
    "value",
    "sortByLabel",
    "strvalue",
    "graphLink",
    "tableLink",
    "safeHtml",
    "pathPrefix",
    "tmpl",
    "args",
    "parseDuration",
];
const FUNCS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toUpper",
    "toLower",
    "title",
    "match",
    "reReplaceAll",
    "stripPort",
    "printf",
    "print",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "len",
    "index",
];

impl Template {
    /// Parses `text`; refuses what Go's parser refuses and the constructs we do not run.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let tokens = split(text)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&tokens, &mut pos)?;
        if let Some(e) = end {
            return err(format!("unexpected {{{{{e}}}}}"));
        }
        Ok(Template { nodes })
    }

    /// Runs the template.
    pub fn execute(&self, data: &TemplateData<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        exec_list(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

/// Parses and runs `text` in one go (how rules expand labels and annotations).
pub fn expand(text: &str, data: &TemplateData<'_>) -> Result<String, TemplateError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    Template::parse(text)?.execute(data)
}

enum Tok {
    Text(String),
    Action(String),
}

/// Splits text from actions, applying `{{-` / `-}}` trimming and dropping comments.
fn split(text: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut out = vec![];
    let mut rest = text;
    let mut trim_next = false;
    while let Some(i) = rest.find("{{") {
        let mut t = &rest[..i];
        if trim_next {
            t = t.trim_start();
        }
        let after = &rest[i + 2..];
        let trim_left = after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            t = t.trim_end();
        }
        if !t.is_empty() {
            out.push(Tok::Text(t.to_string()));
        }
        let body_start = if trim_left { &after[1..] } else { after };
        let Some(j) = find_close(body_start) else {
            return err("unclosed action");
        };
        let mut body = &body_start[..j];
        trim_next = body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-");
        if trim_next {
            body = &body[..body.len() - 1];
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push(Tok::Action(body.to_string()));
        }
        rest = &body_start[j + 2..];
    }
    let t = if trim_next { rest.trim_start() } else { rest };
    if !t.is_empty() {
        out.push(Tok::Text(t.to_string()));
    }
    Ok(out)
}

/// The `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses nodes until `{{else…}}` or `{{end}}`, which it returns.
fn parse_list(toks: &[Tok], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), TemplateError> {
    let mut nodes = vec![];
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s.clone())),
            Tok::Action(a) => {
                let word = a.split_whitespace().next().unwrap_or("");
                match word {
                    "end" | "else" => return Ok((nodes, Some(a.clone()))),
                    "if" => nodes.push(parse_if(&a[2..], toks, pos)?),
                    "range" | "with" | "define" | "template" | "block" | "break" | "continue" => {
                        return err(format!("{{{{{word}}}}} is not supported in rule templates"))
                    }
                    "" => return err("missing value for command"),
                    _ => nodes.push(Node::Action(parse_pipeline(a)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn parse_if(cond: &str, toks: &[Tok], pos: &mut usize) -> Result<Node, TemplateError> {
    let cond = parse_pipeline(cond)?;
    let (then, end) = parse_list(toks, pos)?;
    let end = end.ok_or_else(|| TemplateError("unexpected EOF: {{if}} without {{end}}".into()))?;
    let otherwise = if end == "end" {
        vec![]
    } else if let Some(rest) = end.strip_prefix("else") {
        let rest = rest.trim();
        if let Some(c) = rest.strip_prefix("if ") {
            vec![parse_if(c, toks, pos)?]
        } else if rest.is_empty() {
            let (o, end) = parse_list(toks, pos)?;
            if end.as_deref() != Some("end") {
                return err("expected {{end}} after {{else}}");
            }
            o
        } else {
            return err(format!("unexpected {{{{{end}}}}}"));
        }
    } else {
        return err(format!("unexpected {{{{{end}}}}}"));
    };
    Ok(Node::If { cond, then, otherwise })
}

fn parse_pipeline(s: &str) -> Result<Pipeline, TemplateError> {
    if let Some(rest) = s.trim_start().strip_prefix('$') {
        let after = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
        let after = after.trim_start();
        if after.starts_with(":=") || (after.starts_with('=') && !after.starts_with("==")) {
            return err(format!("assigning variables is not supported in rule templates: {s}"));
        }
    }
    let mut lx = Lexer { s: s.as_bytes(), i: 0 };
    let p = lx.pipeline()?;
    lx.skip_ws();
    if lx.i < lx.s.len() {
        return err(format!("unexpected {:?} in action", &s[lx.i..]));
    }
    Ok(p)
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn pipeline(&mut self) -> Result<Pipeline, TemplateError> {
        let mut cmds = vec![];
        loop {
            let cmd = self.command()?;
            if cmd.is_empty() {
                return err("missing value for command");
            }
            cmds.push(cmd);
            self.skip_ws();
            if self.i < self.s.len() && self.s[self.i] == b'|' {
                self.i += 1;
                continue;
            }
            return Ok(cmds);
        }
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let mut ops = vec![];
        loop {
            self.skip_ws();
            if self.i >= self.s.len() || matches!(self.s[self.i], b'|' | b')') {
                return Ok(ops);
            }
            ops.push(self.operand()?);
        }
    }

    fn ident(&mut self) -> String {
        let st = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[st..self.i]).into_owned()
    }

    fn fields(&mut self) -> Vec<String> {
        let mut out = vec![];
        while self.i < self.s.len() && self.s[self.i] == b'.' {
            self.i += 1;
            let f = self.ident();
            if f.is_empty() {
                break;
            }
            out.push(f);
        }
        out
    }

    fn operand(&mut self) -> Result<Operand, TemplateError> {
        let c = self.s[self.i];
        match c {
            b'.' => Ok(Operand::Field(self.fields())),
            b'$' => {
                self.i += 1;
                let name = self.ident();
                let f = self.fields();
                Ok(Operand::Var(name, f))
            }
            b'(' => {
                self.i += 1;
                let p = self.pipeline()?;
                self.skip_ws();
                if self.i >= self.s.len() || self.s[self.i] != b')' {
                    return err("unclosed left paren");
                }
                self.i += 1;
                Ok(Operand::Sub(p))
            }
            b'"' => {
                let st = self.i;
                self.i += 1;
                while self.i < self.s.len() && self.s[self.i] != b'"' {
                    if self.s[self.i] == b'\\' {
                        self.i += 1;
                    }
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return err("unterminated quoted string");
                }
                self.i += 1;
                let raw = String::from_utf8_lossy(&self.s[st..self.i]).into_owned();
                let s: String = serde_json::from_str(&raw).or_else(|_| err(format!("bad quoted string {raw}")))?;
                Ok(Operand::Str(s))
            }
            b'`' => {
                self.i += 1;
                let st = self.i;
                while self.i < self.s.len() && self.s[self.i] != b'`' {
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return err("unterminated raw quoted string");
                }
                let s = String::from_utf8_lossy(&self.s[st..self.i]).into_owned();
                self.i += 1;
                Ok(Operand::Str(s))
            }
            b'0'..=b'9' | b'-' | b'+' => {
                let st = self.i;
                self.i += 1;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'.' | b'_'))
                {
                    self.i += 1;
                }
                let t = String::from_utf8_lossy(&self.s[st..self.i]).into_owned();
                t.parse::<f64>()
                    .map(Operand::Num)
                    .or_else(|_| err(format!("bad number syntax: {t:?}")))
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let id = self.ident();
                match id.as_str() {
                    "true" => Ok(Operand::Bool(true)),
                    "false" => Ok(Operand::Bool(false)),
                    "nil" => err("nil is not a command"),
                    f if FUNCS.contains(&f) || OPTIONAL_FUNCS.contains(&f) => Ok(Operand::Func(id)),
                    _ => err(format!("function {id:?} not defined")),
                }
            }
            other => err(format!("unexpected {:?} in operand", other as char)),
        }
    }
}

fn exec_list(nodes: &[Node], data: &TemplateData<'_>, out: &mut String) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&eval_pipeline(p, data)?.print()),
            Node::If { cond, then, otherwise } => {
                if eval_pipeline(cond, data)?.truth() {
                    exec_list(then, data, out)?;
                } else {
                    exec_list(otherwise, data, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, data: &TemplateData<'_>) -> Result<Val, TemplateError> {
    let mut prev: Option<Val> = None;
    for cmd in p {
        prev = Some(eval_command(cmd, data, prev.take())?);
    }
    Ok(prev.unwrap_or(Val::Nil))
}

fn map_of(m: &BTreeMap<&str, &str>) -> Val {
    Val::Map(m.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn root_field(name: &str, data: &TemplateData<'_>) -> Result<Val, TemplateError> {
    Ok(match name {
        "Labels" | "labels" => map_of(&data.labels),
        "Value" | "value" => Val::Num(data.value),
        "ExternalLabels" | "externalLabels" => map_of(&data.external_labels),
        "ExternalURL" | "externalURL" => Val::Str(data.external_url.to_string()),
        other => return err(format!("can't evaluate field {other}")),
    })
}

fn walk(mut v: Val, path: &[String]) -> Result<Val, TemplateError> {
    for f in path {
        v = match v {
            // A missing label is Go's zero value for a map[string]string: "".
            Val::Map(m) => Val::Str(m.get(f).cloned().unwrap_or_default()),
            other => return err(format!("can't evaluate field {f} in {}", other.print())),
        };
    }
    Ok(v)
}

fn eval_operand(op: &Operand, data: &TemplateData<'_>) -> Result<Val, TemplateError> {
    match op {
        Operand::Field(path) if path.is_empty() => Ok(Val::Nil),
        Operand::Field(path) => walk(root_field(&path[0], data)?, &path[1..]),
        Operand::Var(name, path) if name.is_empty() => match path.split_first() {
            Some((first, rest)) => walk(root_field(first, data)?, rest),
            None => Ok(Val::Nil),
        },
        Operand::Var(name, path) => walk(root_field(name, data)?, path),
        Operand::Str(s) => Ok(Val::Str(s.clone())),
        Operand::Num(n) => Ok(Val::Num(*n)),
        Operand::Bool(b) => Ok(Val::Bool(*b)),
        Operand::Sub(p) => eval_pipeline(p, data),
        Operand::Func(f) => call(f, vec![]),
    }
}

fn eval_command(cmd: &Command, data: &TemplateData<'_>, piped: Option<Val>) -> Result<Val, TemplateError> {
    match &cmd[0] {
        Operand::Func(f) => {
            let mut args = cmd[1..]
                .iter()
                .map(|o| eval_operand(o, data))
                .collect::<Result<Vec<_>, _>>()?;
            args.extend(piped);
            call(f, args)
        }
        op => {
            if cmd.len() > 1 || piped.is_some() {
                return err("can't give argument to non-function");
            }
            eval_operand(op, data)
        }
    }
}

fn arity(f: &str, args: &[Val], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return err(format!("wrong number of args for {f}: want {n} got {}", args.len()));
    }
    Ok(())
}

fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, TemplateError> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y).ok_or_else(|| TemplateError("incomparable NaN".into())),
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        _ => err("incompatible types for comparison"),
    }
}

fn call(f: &str, args: Vec<Val>) -> Result<Val, TemplateError> {
    use std::cmp::Ordering::*;
    let s = |v: &Val| v.print();
    Ok(match f {
        "humanize" => {
            arity(f, &args, 1)?;
            Val::Str(humanize(args[0].to_float()?))
        }
        "humanize1024" => {
            arity(f, &args, 1)?;
            Val::Str(humanize1024(args[0].to_float()?))
        }
        "humanizeDuration" => {
            arity(f, &args, 1)?;
            Val::Str(humanize_duration(args[0].to_float()?))
        }
        "humanizePercentage" => {
            arity(f, &args, 1)?;
            Val::Str(format!("{}%", format_g(args[0].to_float()? * 100.0, Some(4))))
        }
        "humanizeTimestamp" => {
            arity(f, &args, 1)?;
            Val::Str(humanize_timestamp(args[0].to_float()?))
        }
        "toUpper" => {
            arity(f, &args, 1)?;
            Val::Str(s(&args[0]).to_uppercase())
        }
        "toLower" => {
            arity(f, &args, 1)?;
            Val::Str(s(&args[0]).to_lowercase())
        }
        "title" => {
            arity(f, &args, 1)?;
            let mut out = String::new();
            let mut start = true;
            for c in s(&args[0]).chars() {
                if start && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            Val::Str(out)
        }
        "match" => {
            arity(f, &args, 2)?;
            let re = regex::Regex::new(&s(&args[0])).or_else(|e| err(format!("bad regex: {e}")))?;
            Val::Bool(re.is_match(&s(&args[1])))
        }
        "reReplaceAll" => {
            arity(f, &args, 3)?;
            let re = regex::Regex::new(&s(&args[0])).or_else(|e| err(format!("bad regex: {e}")))?;
            Val::Str(re.replace_all(&s(&args[2]), s(&args[1]).as_str()).into_owned())
        }
        "stripPort" => {
            arity(f, &args, 1)?;
            let h = s(&args[0]);
            Val::Str(match h.rsplit_once(':') {
                Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                    host.trim_start_matches('[').trim_end_matches(']').to_string()
                }
                _ => h,
            })
        }
        "printf" => {
            if args.is_empty() {
                return err("wrong number of args for printf: want at least 1 got 0");
            }
            Val::Str(printf(&s(&args[0]), &args[1..]))
        }
        "print" => {
            // Go's fmt.Sprint: a space between operands when neither is a string.
            let mut out = String::new();
            for (i, a) in args.iter().enumerate() {
                if i > 0 && !matches!(a, Val::Str(_)) && !matches!(args[i - 1], Val::Str(_)) {
                    out.push(' ');
                }
                out.push_str(&a.print());
            }
            Val::Str(out)
        }
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(f, &args, 2)?;
            let o = compare(&args[0], &args[1])?;
            Val::Bool(match f {
                "eq" => o == Equal,
                "ne" => o != Equal,
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            })
        }
        "and" => args.into_iter().find(|a| !a.truth()).unwrap_or(Val::Bool(true)),
        "or" => {
            let last = args.last().cloned().unwrap_or(Val::Nil);
            args.into_iter().find(Val::truth).unwrap_or(last)
        }
        "not" => {
            arity(f, &args, 1)?;
            Val::Bool(!args[0].truth())
        }
        "len" => {
            arity(f, &args, 1)?;
            Val::Num(match &args[0] {
                Val::Str(s) => s.len() as f64,
                Val::Map(m) => m.len() as f64,
                other => return err(format!("len of {}", other.print())),
            })
        }
        "index" => {
            arity(f, &args, 2)?;
            match &args[0] {
                Val::Map(m) => Val::Str(m.get(&s(&args[1])).cloned().unwrap_or_default()),
                other => return err(format!("can't index {}", other.print())),
            }
        }
        // Optional in the alert-generator spec: empty when unsupported.
        _ => Val::Str(String::new()),
    })
}

/// Go's `%v` of a float (`prec` None: shortest digits) and `%.Ng`, NaN/Inf spelled as
/// Prometheus does.
pub fn format_g(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Digits and exponent, rounded to `prec` significant digits or the shortest round trip.
    let e_repr = match prec {
        Some(p) => format!("{:.*e}", p.max(1) - 1, v),
        None => format!("{v:e}"),
    };
    let (mant, exp) = e_repr.split_once('e').unwrap_or((&e_repr, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    // Go: %e when exp < -4 || exp >= precision, and `%v` (shortest) decides with 6.
    let eprec = prec.map_or(6, |p| p.max(1) as i32);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if exp < -4 || exp >= eprec {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// Prometheus's `humanize`: SI prefixes, 4 significant digits.
pub fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

/// Prometheus's `humanize1024`: binary prefixes.
pub fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

/// Prometheus's `humanizeDuration`: `1d 2h 3m 4s`, or seconds with SI prefixes below 1s.
pub fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return format_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", format_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", format_g(v, Some(4)));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", format_g(v, Some(4)))
}

/// Prometheus's `humanizeTimestamp`: Go's `time.Time.String()` in UTC.
fn humanize_timestamp(v: f64) -> String {
    if !v.is_finite() {
        return format_g(v, Some(4));
    }
    let secs = v.floor() as i64;
    // Rounded to milliseconds, as Prometheus does, so float noise does not print.
    let nanos = (((v - v.floor()) * 1e3).round() as u32).min(999) * 1_000_000;
    match chrono::DateTime::from_timestamp(secs, nanos.min(999_999_999)) {
        Some(t) => {
            let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
            if nanos > 0 {
                let frac = format!("{:09}", nanos);
                let _ = write!(s, ".{}", frac.trim_end_matches('0'));
            }
            s.push_str(" +0000 UTC");
            s
        }
        None => format_g(v, Some(4)),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %e %g %q %x %%`, with
/// `-`/`+`/`0` flags, width and precision.
fn printf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut cs = format.chars().peekable();
    while let Some(c) = cs.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut plus, mut zero) = (false, false, false);
        while let Some(&f) = cs.peek() {
            match f {
                '-' => left = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' | '#' => {}
                _ => break,
            }
            cs.next();
        }
        let mut width = String::new();
        while let Some(&d) = cs.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            cs.next();
        }
        let mut prec: Option<usize> = None;
        if cs.peek() == Some(&'.') {
            cs.next();
            let mut p = String::new();
            while let Some(&d) = cs.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                cs.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = cs.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let num = a.to_float();
        let body = match (verb, &num) {
            ('d', Ok(n)) => format!("{}", n.trunc() as i64),
            ('f' | 'F', Ok(n)) => format!("{:.*}", prec.unwrap_or(6), n),
            ('e', Ok(n)) => {
                let s = format!("{:.*e}", prec.unwrap_or(6), n);
                match s.split_once('e') {
                    Some((m, e)) => {
                        let e: i32 = e.parse().unwrap_or(0);
                        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
                    }
                    None => s,
                }
            }
            ('g', Ok(n)) => format_g(*n, prec),
            ('x', Ok(n)) if matches!(a, Val::Num(_)) => format!("{:x}", n.trunc() as i64),
            ('q', _) => serde_json::to_string(&a.print()).unwrap_or_default(),
            ('s' | 'v' | 'x', _) => {
                let s = a.print();
                match prec {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            (v, _) => format!("%!{v}({})", a.print()),
        };
        let body = if plus && matches!(num, Ok(n) if n >= 0.0) && "dfeg".contains(verb) {
            format!("+{body}")
        } else {
            body
        };
        let w: usize = width.parse().unwrap_or(0);
        let pad = w.saturating_sub(body.chars().count());
        if left {
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && "dfeg".contains(verb) {
            let (sign, digits) = match body.strip_prefix(['-', '+']) {
                Some(d) => (&body[..1], d),
                None => ("", body.as_str()),
            };
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&body);
        }
    }
    for extra in args {
        let _ = write!(out, "%!(EXTRA {})", extra.print());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> TemplateData<'static> {
        TemplateData {
            labels: [("instance", "host:9090"), ("job", "api")].into_iter().collect(),
            value: 1234.5678,
            external_labels: [("cluster", "eu1")].into_iter().collect(),
            external_url: "http://ruler.example",
        }
    }

    fn run(t: &str) -> String {
        expand(t, &data()).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    #[test]
    fn variables_and_fields() {
        assert_eq!(run("{{ $labels.instance }} of {{ .Labels.job }}"), "host:9090 of api");
        assert_eq!(run("{{ $value }}"), "1234.5678");
        assert_eq!(run("{{ .Value }}"), "1234.5678");
        assert_eq!(
            run("{{ $externalLabels.cluster }} {{ $externalURL }}"),
            "eu1 http://ruler.example"
        );
        assert_eq!(run("[{{ $labels.missing }}]"), "[]");
        assert_eq!(run("no templates"), "no templates");
        assert_eq!(run("a {{- \" b \" -}} c"), "a b c");
        assert_eq!(run("{{/* a comment */}}x"), "x");
    }

    #[test]
    fn prometheus_functions() {
        assert_eq!(run("{{ $value | humanize }}"), "1.235k");
        assert_eq!(run("{{ humanize 0.0012 }}"), "1.2m");
        assert_eq!(run("{{ humanize 1e6 }}"), "1M");
        assert_eq!(run("{{ humanize 0 }}"), "0");
        assert_eq!(run("{{ humanize1024 1048576 }}"), "1Mi");
        assert_eq!(run("{{ humanizeDuration 90061 }}"), "1d 1h 1m 1s");
        assert_eq!(run("{{ humanizeDuration 3.5 }}"), "3.5s");
        assert_eq!(run("{{ humanizeDuration 0.25 }}"), "250ms");
        assert_eq!(run("{{ humanizeDuration 0 }}"), "0s");
        assert_eq!(run("{{ humanizePercentage 0.1234 }}"), "12.34%");
        assert_eq!(
            run("{{ humanizeTimestamp 1435065584.128 }}"),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(run("{{ printf \"%.2f\" $value }}"), "1234.57");
        assert_eq!(run("{{ printf \"%s=%d\" \"n\" 42 }}"), "n=42");
        assert_eq!(run("{{ printf \"%5.1f|%-4s|\" 3.14159 \"ab\" }}"), "  3.1|ab  |");
        assert_eq!(run("{{ \"ab\" | toUpper }}"), "AB");
        assert_eq!(run("{{ title \"hello world\" }}"), "Hello World");
        assert_eq!(run("{{ reReplaceAll \":[0-9]+\" \"\" $labels.instance }}"), "host");
        assert_eq!(run("{{ $labels.instance | stripPort }}"), "host");
        assert_eq!(run("{{ query \"up\" }}"), "");
    }

    #[test]
    fn conditionals() {
        assert_eq!(run("{{ if gt $value 1000.0 }}big{{ else }}small{{ end }}"), "big");
        assert_eq!(
            run("{{ if eq $labels.job \"db\" }}db{{ else if eq $labels.job \"api\" }}api{{ end }}"),
            "api"
        );
        assert_eq!(run("{{ if not (match \"^host\" $labels.instance) }}no{{ end }}"), "");
    }

    #[test]
    fn go_float_printing() {
        assert_eq!(format_g(0.5, None), "0.5");
        assert_eq!(format_g(1e21, None), "1e+21");
        assert_eq!(format_g(1e6, None), "1e+06");
        assert_eq!(format_g(123456.0, None), "123456");
        assert_eq!(format_g(0.00001, None), "1e-05");
        assert_eq!(format_g(1234.5678, Some(4)), "1235");
        assert_eq!(format_g(12345.0, Some(4)), "1.234e+04");
        assert_eq!(format_g(100.0, Some(4)), "100");
        assert_eq!(format_g(f64::INFINITY, None), "+Inf");
        assert_eq!(format_g(-2.0, Some(4)), "-2");
    }

    #[test]
    fn parse_errors_are_readable() {
        for (t, want) in [
            ("{{ $value", "unclosed action"),
            ("{{ nosuchfunc 1 }}", "function \"nosuchfunc\" not defined"),
            ("{{ if 1 }}x", "without {{end}}"),
            ("{{ range $labels }}{{ end }}", "not supported"),
            ("{{ end }}", "unexpected"),
            ("{{ $x := 1 }}", "not supported"),
        ] {
            let e = Template::parse(t).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
