//! clusterctl's variable substitution for cluster templates, with the semantics of the
//! `drone/envsubst/v2` parser and evaluator that clusterctl's `SimpleProcessor` uses.
//!
//! What a template author relies on, all checked by the tests below and in `tests/suite/templates.rs`:
//! - Only `${...}` is an expression; a bare `$VAR` is text. `$$` before `$` and `\\` / `\/` in text
//!   are escapes that drop the first character. `${ VAR }` (spaces inside the braces) is rewritten to
//!   `${VAR}` first, as clusterctl does for legacy templates.
//! - Names are letters, digits, `_` and `-`: `${VAR-x}` is the variable `VAR-x`, not a default.
//! - `${VAR=x}`, `${VAR:=x}`, `${VAR:-x}` (and `:?`, `:+`) all mean "the value, or `x` when the value
//!   is empty"; nothing is assigned, so every occurrence carries its own default. Defaults may nest
//!   (`${A:=${B:=x}-y}`).
//! - A variable is required when its **first** occurrence has no default argument; `${VAR:=}` has an
//!   empty argument list and is therefore required too. Variables inside default arguments are not
//!   inspected. All missing required variables are reported at once, sorted, with clusterctl's message.
//! - Casing (`^ ^^ , ,,`), length (`${#VAR}`), substring (`${VAR:1:2}`), prefix/suffix removal
//!   (`# ## % %%`, glob patterns) and replacement (`/ // /# /%`) work as in drone/envsubst, on bytes for
//!   ASCII text (non-ASCII text is handled per character).

use std::collections::BTreeMap;

/// Why a template could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvsubstError {
    /// A `${` expression that does not parse (drone/envsubst's `ErrBadSubstitution`).
    #[error("bad substitution")]
    BadSubstitution,
    /// Required variables (no default at their first occurrence) without a value, sorted.
    #[error(
        "value for variables [{}] is not set. Please set the value using os environment variables or the clusterctl config file",
        .0.join(", ")
    )]
    MissingVariables(Vec<String>),
}

/// A variable of a template as `clusterctl generate cluster --list-variables` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableMetadata {
    /// Variable name.
    pub name: String,
    /// Whether clusterctl lists it as required.
    pub required: bool,
    /// Default text (nested variables shown as `${NAME}`), empty when none.
    pub default_value: String,
}

/// A node of the parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Text(String),
    Func(FuncNode),
}

/// `${param<name>args...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FuncNode {
    param: String,
    name: String,
    args: Vec<Node>,
}

const EOF: char = '\0';
const SCAN_IDENT: u8 = 1;
const SCAN_LBRACK: u8 = 2;
const SCAN_RBRACK: u8 = 4;
const SCAN_ESCAPE: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Illegal,
    Eof,
    Ident,
    Lbrack,
    Rbrack,
}

type Accept = fn(char, usize) -> bool;

fn accept_rune(_: char, _: usize) -> bool {
    true
}
fn accept_ident(r: char, _: usize) -> bool {
    r.is_alphanumeric() || r == '_' || r == '-'
}
fn accept_colon(r: char, _: usize) -> bool {
    r == ':'
}
fn accept_one_hash(r: char, i: usize) -> bool {
    r == '#' && i == 1
}
fn accept_not_closing(r: char, _: usize) -> bool {
    r != '}'
}
fn accept_hash_func(r: char, i: usize) -> bool {
    r == '#' && i < 3
}
fn accept_percent_func(r: char, i: usize) -> bool {
    r == '%' && i < 3
}
fn accept_default_func(r: char, i: usize) -> bool {
    (i == 1 && r == ':') || (i == 2 && matches!(r, '=' | '-' | '?' | '+'))
}
fn accept_replace_func(r: char, i: usize) -> bool {
    (i == 1 && r == '/') || (i == 2 && matches!(r, '/' | '#' | '%'))
}
fn accept_one_equal(r: char, i: usize) -> bool {
    i == 1 && r == '='
}
fn accept_one_colon(r: char, i: usize) -> bool {
    i == 1 && r == ':'
}
fn reject_colon_close(r: char, _: usize) -> bool {
    r != ':' && r != '}'
}
fn accept_slash(r: char, _: usize) -> bool {
    r == '/'
}
fn accept_not_slash(r: char, _: usize) -> bool {
    r != '/'
}
fn accept_casing_func(r: char, i: usize) -> bool {
    (r == ',' || r == '^') && i < 3
}

/// The scanner: a character buffer that escapes edit in place, as in drone/envsubst.
struct Scanner {
    buf: Vec<char>,
    pos: usize,
    start: usize,
    width: usize,
    mode: u8,
    accept: Accept,
}

impl Scanner {
    fn new(text: &str) -> Self {
        Self {
            buf: text.chars().collect(),
            pos: 0,
            start: 0,
            width: 0,
            mode: 0,
            accept: accept_rune,
        }
    }

    fn read(&mut self) -> char {
        if self.pos >= self.buf.len() {
            self.width = 0;
            return EOF;
        }
        let r = self.buf[self.pos];
        self.width = 1;
        self.pos += 1;
        r
    }

    fn unread(&mut self) {
        self.pos -= self.width;
    }

    /// Drops the character just read; the one after it counts as consumed.
    fn skip(&mut self) {
        self.buf.remove(self.pos - 1);
    }

    fn peek(&mut self) -> char {
        let r = self.read();
        self.unread();
        r
    }

    fn string(&self) -> String {
        self.buf[self.start..self.pos].iter().collect()
    }

    fn scan(&mut self) -> Token {
        self.start = self.pos;
        let r = self.read();
        if r == EOF {
            Token::Eof
        } else if self.scan_lbrack(r) {
            Token::Lbrack
        } else if self.scan_rbrack(r) {
            Token::Rbrack
        } else if self.scan_ident(r) {
            Token::Ident
        } else {
            Token::Illegal
        }
    }

    fn scan_ident(&mut self, r: char) -> bool {
        if self.mode & SCAN_IDENT == 0 {
            return false;
        }
        if self.scan_escaped(r) {
            self.skip();
        } else if !(self.accept)(r, self.pos - self.start) {
            return false;
        }
        loop {
            let r = self.read();
            if r == EOF {
                self.unread();
                break;
            }
            if self.scan_lbrack(r) {
                self.unread();
                self.unread();
                break;
            }
            if self.scan_escaped(r) {
                self.skip();
                continue;
            }
            if !(self.accept)(r, self.pos - self.start) {
                self.unread();
                break;
            }
        }
        true
    }

    fn scan_lbrack(&mut self, r: char) -> bool {
        if self.mode & SCAN_LBRACK == 0 {
            return false;
        }
        if r == '$' {
            if self.read() == '{' {
                return true;
            }
            self.unread();
        }
        false
    }

    fn scan_rbrack(&mut self, r: char) -> bool {
        self.mode & SCAN_RBRACK != 0 && r == '}'
    }

    fn scan_escaped(&mut self, r: char) -> bool {
        if self.mode & SCAN_ESCAPE == 0 {
            return false;
        }
        if r == '$' && self.peek() == '$' {
            return true;
        }
        r == '\\' && matches!(self.peek(), '/' | '\\')
    }
}

type Parsed<T> = Result<T, EnvsubstError>;

struct Parser {
    scanner: Scanner,
}

impl Parser {
    fn parse(text: &str) -> Parsed<Vec<Node>> {
        let mut parser = Parser {
            scanner: Scanner::new(text),
        };
        let mut nodes = Vec::new();
        loop {
            parser.scanner.accept = accept_rune;
            parser.scanner.mode = SCAN_IDENT | SCAN_LBRACK | SCAN_ESCAPE;
            match parser.scanner.scan() {
                Token::Ident => nodes.push(Node::Text(parser.scanner.string())),
                Token::Eof => return Ok(nodes),
                Token::Lbrack => nodes.push(parser.parse_func()?),
                _ => return Err(EnvsubstError::BadSubstitution),
            }
        }
    }

    fn scan_with(&mut self, accept: Accept, mode: u8) -> Token {
        self.scanner.accept = accept;
        self.scanner.mode = mode;
        self.scanner.scan()
    }

    fn expect_ident(&mut self, accept: Accept) -> Parsed<String> {
        match self.scan_with(accept, SCAN_IDENT) {
            Token::Ident => Ok(self.scanner.string()),
            _ => Err(EnvsubstError::BadSubstitution),
        }
    }

    fn parse_func(&mut self) -> Parsed<Node> {
        if self.scanner.peek() == '#' {
            return self.parse_len_func();
        }
        let name = self.expect_ident(accept_ident)?;
        match self.scanner.peek() {
            ':' => return self.parse_default_or_substr(name),
            '=' => return self.parse_default_func(name),
            ',' | '^' => return self.parse_casing_func(name),
            '/' => return self.parse_replace_func(name),
            '#' => return self.parse_remove_func(name, accept_hash_func),
            '%' => return self.parse_remove_func(name, accept_percent_func),
            _ => {}
        }
        match self.scan_with(accept_ident, SCAN_RBRACK) {
            Token::Rbrack => Ok(Node::Func(FuncNode {
                param: name,
                name: String::new(),
                args: Vec::new(),
            })),
            _ => Err(EnvsubstError::BadSubstitution),
        }
    }

    fn parse_param(&mut self, accept: Accept, mode: u8) -> Parsed<Node> {
        match self.scan_with(accept, mode | SCAN_LBRACK) {
            Token::Lbrack => self.parse_func(),
            Token::Ident | Token::Rbrack => Ok(Node::Text(self.scanner.string())),
            _ => Err(EnvsubstError::BadSubstitution),
        }
    }

    fn parse_default_or_substr(&mut self, name: String) -> Parsed<Node> {
        self.scanner.read();
        let next = self.scanner.peek();
        self.scanner.unread();
        match next {
            '=' | '-' | '?' | '+' => self.parse_default_func(name),
            _ => self.parse_substr_func(name),
        }
    }

    fn parse_substr_func(&mut self, param: String) -> Parsed<Node> {
        let name = self.expect_ident(accept_one_colon)?;
        let mut args = vec![self.parse_param(reject_colon_close, SCAN_IDENT)?];
        match self.scan_with(accept_colon, SCAN_IDENT | SCAN_RBRACK) {
            Token::Rbrack => return Ok(Node::Func(FuncNode { param, name, args })),
            Token::Ident => {}
            _ => return Err(EnvsubstError::BadSubstitution),
        }
        args.push(self.parse_param(accept_not_closing, SCAN_IDENT)?);
        self.consume_rbrack()?;
        Ok(Node::Func(FuncNode { param, name, args }))
    }

    fn parse_remove_func(&mut self, param: String, accept: Accept) -> Parsed<Node> {
        let name = self.expect_ident(accept)?;
        let args = vec![self.parse_param(accept_not_closing, SCAN_IDENT)?];
        self.consume_rbrack()?;
        Ok(Node::Func(FuncNode { param, name, args }))
    }

    fn parse_replace_func(&mut self, param: String) -> Parsed<Node> {
        let name = self.expect_ident(accept_replace_func)?;
        let mut args = vec![self.parse_param(accept_not_slash, SCAN_IDENT | SCAN_ESCAPE)?];
        if self.scan_with(accept_slash, SCAN_IDENT) != Token::Ident {
            return Err(EnvsubstError::BadSubstitution);
        }
        if self.scanner.peek() != '}' {
            args.push(self.parse_param(accept_not_closing, SCAN_IDENT | SCAN_ESCAPE)?);
        }
        self.consume_rbrack()?;
        Ok(Node::Func(FuncNode { param, name, args }))
    }

    fn parse_default_func(&mut self, param: String) -> Parsed<Node> {
        let accept: Accept = if self.scanner.peek() == '=' {
            accept_one_equal
        } else {
            accept_default_func
        };
        let name = self.expect_ident(accept)?;
        let mut args = Vec::new();
        loop {
            if self.scanner.peek() == '}' {
                self.consume_rbrack()?;
                return Ok(Node::Func(FuncNode { param, name, args }));
            }
            args.push(self.parse_param(accept_not_closing, SCAN_IDENT)?);
        }
    }

    fn parse_casing_func(&mut self, param: String) -> Parsed<Node> {
        let name = self.expect_ident(accept_casing_func)?;
        self.consume_rbrack()?;
        Ok(Node::Func(FuncNode {
            param,
            name,
            args: Vec::new(),
        }))
    }

    fn parse_len_func(&mut self) -> Parsed<Node> {
        let name = self.expect_ident(accept_one_hash)?;
        let param = self.expect_ident(accept_ident)?;
        self.consume_rbrack()?;
        Ok(Node::Func(FuncNode {
            param,
            name,
            args: Vec::new(),
        }))
    }

    fn consume_rbrack(&mut self) -> Parsed<()> {
        self.scanner.mode = SCAN_RBRACK;
        if self.scanner.scan() == Token::Rbrack {
            Ok(())
        } else {
            Err(EnvsubstError::BadSubstitution)
        }
    }
}

/// clusterctl's `convertLegacyVars`: `${ VAR }`, `${ VAR}` and `${VAR }` become `${VAR}`.
fn convert_legacy_vars(text: &str) -> String {
    static LEGACY: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let legacy = LEGACY.get_or_init(|| {
        regex::Regex::new(
            r"(\$\{(\s+([A-Za-z0-9_$]+)\s+)\})|(\$\{(\s+([A-Za-z0-9_$]+))\})|(\$\{(([A-Za-z0-9_$]+)\s+)\})",
        )
        .expect("static regex")
    });
    legacy
        .replace_all(text, |c: &regex::Captures<'_>| {
            c[0].chars().filter(|ch| !ch.is_whitespace()).collect::<String>()
        })
        .into_owned()
}

fn eval(nodes: &[Node], mapping: &dyn Fn(&str) -> String, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Func(func) => {
                let args: Vec<String> = func
                    .args
                    .iter()
                    .map(|arg| {
                        let mut buffer = String::new();
                        eval(std::slice::from_ref(arg), mapping, &mut buffer);
                        buffer
                    })
                    .collect();
                out.push_str(&apply(&func.name, &mapping(&func.param), &args));
            }
        }
    }
}

/// drone/envsubst's `lookupFunc` and the functions it returns.
fn apply(name: &str, value: &str, args: &[String]) -> String {
    match name {
        "," => first_char(value, |c| c.to_lowercase().collect()),
        ",," => value.to_lowercase(),
        "^" => first_char(value, |c| c.to_uppercase().collect()),
        "^^" => value.to_uppercase(),
        "#" if args.is_empty() => value.len().to_string(),
        "#" => trim_shortest(value, &args[0]),
        "##" => trim_longest(value, &args[0]),
        "%" => reverse(&trim_shortest(&reverse(value), &reverse(&args[0]))),
        "%%" => reverse(&trim_longest(&reverse(value), &reverse(&args[0]))),
        ":" => substring(value, args),
        "/#" => match args {
            [pattern, replacement] if value.starts_with(pattern.as_str()) => {
                value.replacen(pattern.as_str(), replacement, 1)
            }
            _ => value.to_owned(),
        },
        "/%" => match args {
            [pattern, replacement] if value.ends_with(pattern.as_str()) => {
                format!("{}{replacement}", &value[..value.len() - pattern.len()])
            }
            _ => value.to_owned(),
        },
        "/" => match args {
            [] => value.to_owned(),
            [pattern] => value.replacen(pattern.as_str(), "", 1),
            [pattern, replacement, ..] => value.replacen(pattern.as_str(), replacement, 1),
        },
        "//" => match args {
            [] => value.to_owned(),
            [pattern] => value.replace(pattern.as_str(), ""),
            [pattern, replacement, ..] => value.replace(pattern.as_str(), replacement),
        },
        // `=`, `:=`, `:-`, `:?`, `:+` and anything else: the value, or the joined arguments if empty.
        _ if value.is_empty() && !args.is_empty() => args.concat(),
        _ => value.to_owned(),
    }
}

fn first_char(value: &str, map: impl Fn(char) -> String) -> String {
    let mut chars = value.chars();
    match chars.next() {
        Some(first) => map(first) + chars.as_str(),
        None => String::new(),
    }
}

fn reverse(s: &str) -> String {
    s.chars().rev().collect()
}

/// Prefixes of `s` (longest first), on character boundaries, excluding the empty one.
fn prefixes(s: &str) -> impl Iterator<Item = &str> {
    let mut ends: Vec<usize> = s.char_indices().map(|(i, _)| i).skip(1).collect();
    ends.push(s.len());
    ends.into_iter().rev().map(move |end| &s[..end])
}

fn trim_shortest(s: &str, pattern: &str) -> String {
    let mut shortest = None;
    for prefix in prefixes(s) {
        match glob_match(pattern, prefix) {
            Err(()) => return s.to_owned(),
            Ok(true) => shortest = Some(prefix.len()),
            Ok(false) => {}
        }
    }
    match shortest {
        Some(len) => s[len..].to_owned(),
        None => s.to_owned(),
    }
}

fn trim_longest(s: &str, pattern: &str) -> String {
    for prefix in prefixes(s) {
        match glob_match(pattern, prefix) {
            Err(()) => return s.to_owned(),
            Ok(true) => return s[prefix.len()..].to_owned(),
            Ok(false) => {}
        }
    }
    s.to_owned()
}

/// Go's `path.Match`: `*` (no `/`), `?`, `[...]` classes with ranges and `^`, `\` escapes.
fn glob_match(pattern: &str, name: &str) -> Result<bool, ()> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob(&p, &n)
}

fn glob(p: &[char], n: &[char]) -> Result<bool, ()> {
    match p.first() {
        None => Ok(n.is_empty()),
        Some('*') => {
            for i in 0..=n.len() {
                if i > 0 && n[i - 1] == '/' {
                    break;
                }
                if glob(&p[1..], &n[i..])? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Some('?') => match n.first() {
            Some(&c) if c != '/' => glob(&p[1..], &n[1..]),
            _ => Ok(false),
        },
        Some('[') => {
            let (matched, rest) = class(&p[1..], n.first().copied())?;
            if matched { glob(rest, &n[1..]) } else { Ok(false) }
        }
        Some('\\') => match (p.get(1), n.first()) {
            (None, _) => Err(()),
            (Some(a), Some(b)) if a == b => glob(&p[2..], &n[1..]),
            _ => Ok(false),
        },
        Some(c) => match n.first() {
            Some(b) if b == c => glob(&p[1..], &n[1..]),
            _ => Ok(false),
        },
    }
}

/// Matches one character against a `[...]` class; returns the match and the pattern after `]`.
fn class(p: &[char], c: Option<char>) -> Result<(bool, &[char]), ()> {
    let (negated, mut i) = if p.first() == Some(&'^') {
        (true, 1)
    } else {
        (false, 0)
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = match p.get(i) {
            None => return Err(()),
            Some(']') if !first => break,
            Some('\\') => {
                i += 1;
                *p.get(i).ok_or(())?
            }
            Some(&ch) => ch,
        };
        first = false;
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&ch| ch != ']') {
            i += 1;
            let hi = if p[i] == '\\' {
                i += 1;
                *p.get(i).ok_or(())?
            } else {
                p[i]
            };
            i += 1;
            hi
        } else {
            lo
        };
        if let Some(c) = c
            && lo <= c
            && c <= hi
        {
            matched = true;
        }
    }
    let Some(c) = c else {
        return Ok((false, &p[i + 1..]));
    };
    Ok((matched != negated && c != '/', &p[i + 1..]))
}

fn substring(value: &str, args: &[String]) -> String {
    let bytes = value.as_bytes();
    let Some(Ok(mut pos)) = args.first().map(|a| a.parse::<i64>()) else {
        return value.to_owned();
    };
    let len = bytes.len() as i64;
    if pos < 0 {
        pos = (len + pos).max(0);
    }
    let slice = |from: i64, to: i64| String::from_utf8_lossy(&bytes[from as usize..to as usize]).into_owned();
    if args.len() == 1 {
        return if pos < len { slice(pos, len) } else { String::new() };
    }
    let Ok(length) = args[1].parse::<i64>() else {
        return value.to_owned();
    };
    if pos + length >= len {
        // Go slices `s[pos:]` here and panics when pos > len; an empty string is the sane reading.
        return if pos <= len {
            slice(pos, len)
        } else {
            String::new()
        };
    }
    if length < 0 {
        return value.to_owned();
    }
    slice(pos, pos + length)
}

/// The variables of `text` in order of first occurrence, with whether that occurrence has a default
/// argument (clusterctl's `inspectVariables`).
fn inspect(nodes: &[Node]) -> Vec<(String, &FuncNode)> {
    let mut seen: Vec<(String, &FuncNode)> = Vec::new();
    for node in nodes {
        if let Node::Func(func) = node
            && !seen.iter().any(|(name, _)| *name == func.param)
        {
            seen.push((func.param.clone(), func));
        }
    }
    seen
}

/// The names of the variables a template uses at top level, in order of first occurrence.
pub fn variable_names(text: &str) -> Result<Vec<String>, EnvsubstError> {
    let nodes = Parser::parse(&convert_legacy_vars(text))?;
    Ok(inspect(&nodes).into_iter().map(|(name, _)| name).collect())
}

/// The variables as `clusterctl generate cluster --list-variables` lists them (sorted by name).
pub fn list_variables(text: &str) -> Result<Vec<VariableMetadata>, EnvsubstError> {
    fn default_text(node: &Node) -> String {
        match node {
            Node::Text(text) => text.clone(),
            Node::Func(func) => format!("${{{}}}", func.param),
        }
    }
    let nodes = Parser::parse(&convert_legacy_vars(text))?;
    let mut variables: Vec<VariableMetadata> = inspect(&nodes)
        .into_iter()
        .map(|(name, func)| VariableMetadata {
            required: func.args.is_empty() && func.name.is_empty(),
            default_value: func.args.iter().map(default_text).collect(),
            name,
        })
        .collect();
    variables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(variables)
}

/// Every top-level `${VAR...}` occurrence: (variable, default text if it has default arguments).
/// Used to check that all occurrences of a variable agree on its default (envsubst does not assign).
pub fn occurrences(text: &str) -> Result<Vec<(String, Option<String>)>, EnvsubstError> {
    let nodes = Parser::parse(&convert_legacy_vars(text))?;
    Ok(nodes
        .iter()
        .filter_map(|node| match node {
            Node::Func(func) => Some((
                func.param.clone(),
                (!func.args.is_empty()).then(|| {
                    let mut buffer = String::new();
                    eval(&func.args, &|_| String::new(), &mut buffer);
                    buffer
                }),
            )),
            Node::Text(_) => None,
        })
        .collect())
}

/// clusterctl's `SimpleProcessor.Process`: substitutes `text` with `lookup` (None = not set) after
/// checking that every required variable has a value.
pub fn process(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvsubstError> {
    let text = convert_legacy_vars(text);
    let nodes = Parser::parse(&text)?;
    let mut missing: Vec<String> = inspect(&nodes)
        .into_iter()
        .filter(|(name, func)| func.args.is_empty() && lookup(name).is_none())
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(EnvsubstError::MissingVariables(missing));
    }
    let mut out = String::with_capacity(text.len());
    eval(&nodes, &|name| lookup(name).unwrap_or_default(), &mut out);
    Ok(out)
}

/// [`process`] with the variables of a map.
pub fn process_with(text: &str, variables: &BTreeMap<String, String>) -> Result<String, EnvsubstError> {
    process(text, &|name| variables.get(name).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, vars: &[(&str, &str)]) -> Result<String, EnvsubstError> {
        let map: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        process_with(text, &map)
    }

    #[test]
    fn defaults_apply_when_unset_or_empty_and_never_assign() {
        assert_eq!(run("${A:=x}", &[]).unwrap(), "x");
        assert_eq!(run("${A:-x}", &[]).unwrap(), "x");
        assert_eq!(run("${A=x}", &[]).unwrap(), "x");
        assert_eq!(run("${A:=x}", &[("A", "")]).unwrap(), "x");
        assert_eq!(run("${A=x}", &[("A", "")]).unwrap(), "x");
        assert_eq!(run("${A:=x}", &[("A", "y")]).unwrap(), "y");
        // `:+` and `:?` are defaults too in drone/envsubst.
        assert_eq!(run("${A:+x}", &[]).unwrap(), "x");
        assert_eq!(run("${A:?x}", &[("A", "v")]).unwrap(), "v");
        // The first occurrence decides "required"; later ones are evaluated on their own.
        assert_eq!(run("${A:=x} ${A}", &[]).unwrap(), "x ");
        assert_eq!(
            run("${A} ${A:=x}", &[]),
            Err(EnvsubstError::MissingVariables(vec!["A".into()]))
        );
    }

    #[test]
    fn nested_defaults_and_default_text_with_spaces_and_colons() {
        assert_eq!(run("${A:=${B:=eu-central-1}a}", &[]).unwrap(), "eu-central-1a");
        assert_eq!(
            run("${A:=${B:=eu-central-1}a}", &[("B", "us-east-1")]).unwrap(),
            "us-east-1a"
        );
        assert_eq!(run("${A:=http://x:80/y z}", &[]).unwrap(), "http://x:80/y z");
        assert_eq!(run("\"${A:=}\"", &[("A", "v")]).unwrap(), "\"v\"");
    }

    #[test]
    fn missing_required_variables_are_reported_at_once_sorted_with_clusterctls_message() {
        let err = run("${Z} ${A} ${B:=x} ${C:=} ${Z}", &[]).unwrap_err();
        assert_eq!(
            err,
            EnvsubstError::MissingVariables(vec!["A".into(), "C".into(), "Z".into()])
        );
        assert_eq!(
            err.to_string(),
            "value for variables [A, C, Z] is not set. Please set the value using os environment variables or the clusterctl config file"
        );
        // Set to the empty string counts as set.
        assert_eq!(run("[${A}]", &[("A", "")]).unwrap(), "[]");
    }

    #[test]
    fn only_braced_expressions_substitute_and_escapes_drop_one_character() {
        assert_eq!(run("$A ${A}", &[("A", "v")]).unwrap(), "$A v");
        assert_eq!(run("$${A}", &[("A", "v")]).unwrap(), "${A}");
        assert_eq!(run("a\\\\b \\/ \\n", &[]).unwrap(), "a\\b / \\n");
        assert_eq!(run("cost: 5$", &[]).unwrap(), "cost: 5$");
        // A dash belongs to the name.
        assert_eq!(
            run("${A-x}", &[]),
            Err(EnvsubstError::MissingVariables(vec!["A-x".into()]))
        );
    }

    #[test]
    fn legacy_spaces_inside_braces_are_accepted() {
        assert_eq!(run("${ A } ${ A} ${A }", &[("A", "v")]).unwrap(), "v v v");
    }

    #[test]
    fn malformed_expressions_are_bad_substitutions() {
        for text in ["${", "${A", "${A:=x", "${}", "${A B}", "${A:1:2", "${A//o}"] {
            assert_eq!(
                run(text, &[("A", "v")]),
                Err(EnvsubstError::BadSubstitution),
                "{text}"
            );
        }
    }

    #[test]
    fn string_functions_follow_drone_envsubst() {
        let v = [("A", "hello-world.yaml"), ("E", "")];
        let cases = [
            ("${A^}", "Hello-world.yaml"),
            ("${A^^}", "HELLO-WORLD.YAML"),
            ("${A,}", "hello-world.yaml"),
            ("${#A}", "16"),
            ("${A:6}", "world.yaml"),
            ("${A:6:5}", "world"),
            ("${A:-4}", "hello-world.yaml"),
            ("${A#*-}", "world.yaml"),
            ("${A##*o}", "rld.yaml"),
            ("${A%.*}", "hello-world"),
            ("${A%%o*}", "hell"),
            ("${A/o/0}", "hell0-world.yaml"),
            ("${A//o/0}", "hell0-w0rld.yaml"),
            ("${A/#hello/bye}", "bye-world.yaml"),
            ("${A/%yaml/yml}", "hello-world.yml"),
            ("${A//o/}", "hell-wrld.yaml"),
            ("${E^^}", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(run(text, &v).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn listing_reports_required_and_defaults_like_clusterctl() {
        let vars = list_variables("${B:=x} ${A} ${C:=${A}-y} ${D^^} ${E:=}").unwrap();
        let summary: Vec<(&str, bool, &str)> = vars
            .iter()
            .map(|v| (v.name.as_str(), v.required, v.default_value.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("A", true, ""),
                ("B", false, "x"),
                ("C", false, "${A}-y"),
                ("D", false, ""),
                ("E", false, "")
            ]
        );
    }
}
