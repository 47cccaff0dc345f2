//! A minimal, deterministic YAML emitter for the user-data documents.
//!
//! The renderers need byte-stable output (golden files) with readable literal blocks for the boot script
//! and the kubeadm config, and they emit only maps, sequences, strings and booleans. Every string is
//! either a plain scalar (only when it is unambiguously a string), a literal block (multi-line text
//! without characters a block cannot carry) or a double-quoted scalar with JSON escapes (a subset of
//! YAML's escapes), so any input round-trips.

/// A YAML node of a user-data document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// A mapping; keys are emitted in the given order.
    Map(Vec<(&'static str, Node)>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A string scalar.
    Str(String),
    /// A boolean scalar.
    Bool(bool),
}

impl Node {
    /// A string node.
    pub(crate) fn str(s: impl Into<String>) -> Self {
        Node::Str(s.into())
    }

    /// A sequence of string nodes.
    pub(crate) fn strs<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Node::Seq(items.into_iter().map(|s| Node::Str(s.into())).collect())
    }
}

/// Emits `root` (a mapping) as a YAML document after the `header` line (e.g. `#alpine-config`).
pub(crate) fn document(header: &str, root: &Node) -> String {
    let mut out = String::with_capacity(8192);
    out.push_str(header);
    out.push('\n');
    match root {
        Node::Map(entries) => emit_map(&mut out, entries, 0),
        other => emit_value_line(&mut out, other, 0),
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

/// Emits the entries of a map, each starting on a fresh line at `level` spaces.
fn emit_map(out: &mut String, entries: &[(&'static str, Node)], level: usize) {
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            indent(out, level);
        }
        emit_entry(out, key, value, level);
    }
}

/// Emits `key: value` (the caller has already indented the key).
fn emit_entry(out: &mut String, key: &str, value: &Node, level: usize) {
    out.push_str(key);
    out.push(':');
    match value {
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(entries) => {
            out.push('\n');
            indent(out, level + 2);
            emit_map(out, entries, level + 2);
        }
        Node::Seq(items) => {
            out.push('\n');
            emit_seq(out, items, level);
        }
        scalar => {
            out.push(' ');
            emit_scalar(out, scalar, level + 2);
        }
    }
}

/// Emits a block sequence whose dashes sit at `level` spaces.
fn emit_seq(out: &mut String, items: &[Node], level: usize) {
    for item in items {
        indent(out, level);
        out.push_str("- ");
        match item {
            Node::Map(entries) if !entries.is_empty() => emit_map(out, entries, level + 2),
            Node::Seq(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_seq(out, inner, level + 2);
            }
            other => emit_value_line(out, other, level + 2),
        }
    }
}

fn emit_value_line(out: &mut String, node: &Node, level: usize) {
    match node {
        Node::Map(entries) if entries.is_empty() => out.push_str("{}\n"),
        Node::Seq(items) if items.is_empty() => out.push_str("[]\n"),
        Node::Map(entries) => emit_map(out, entries, level),
        Node::Seq(items) => emit_seq(out, items, level),
        scalar => emit_scalar(out, scalar, level),
    }
}

/// Emits a scalar followed by a newline; a literal block's content is indented by `level` spaces.
fn emit_scalar(out: &mut String, node: &Node, level: usize) {
    match node {
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Str(s) if is_plain_safe(s) => out.push_str(s),
        Node::Str(s) if is_block_safe(s) => {
            emit_literal_block(out, s, level);
            return;
        }
        Node::Str(s) => out.push_str(&double_quoted(s)),
        Node::Map(_) | Node::Seq(_) => unreachable!("collections are not scalars"),
    }
    out.push('\n');
}

fn emit_literal_block(out: &mut String, s: &str, level: usize) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            indent(out, level);
            out.push_str(line);
        }
        out.push('\n');
    }
    // Kept trailing newlines beyond the first one are empty lines of the block.
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// JSON string escaping is valid YAML double-quoted style.
pub(crate) fn double_quoted(s: &str) -> String {
    serde_json::to_string(s).expect("serialising a string cannot fail")
}

/// YAML 1.1 and 1.2 words that a plain scalar would turn into something other than a string.
const RESERVED: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"];

/// True when `s` can be a plain scalar and still be read back as the same string by YAML 1.1 and 1.2
/// parsers (libyaml in tiny-cloud's `yx`, PyYAML in cloud-init).
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false;
    }
    if s.ends_with(' ') || s.ends_with(':') || RESERVED.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.contains("  ") {
        return false;
    }
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || " ._/:~+=@,()*-".contains(c))
}

/// True when `s` is multi-line text a literal block carries unchanged.
fn is_block_safe(s: &str) -> bool {
    if !s.contains('\n') {
        return false;
    }
    let first_content = s.split('\n').find(|l| !l.is_empty()).unwrap_or("");
    if first_content.is_empty() || first_content.starts_with(' ') {
        return false;
    }
    // No line may consist of spaces only: a block would keep them but some parsers fold them.
    if s.split('\n')
        .any(|l| !l.is_empty() && l.trim_matches(' ').is_empty())
    {
        return false;
    }
    s.chars().all(|c| {
        c == '\n' || c == '\t' || (!c.is_control() && !matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_choose_a_style_that_round_trips() {
        assert!(is_plain_safe("kubelet~1.34"));
        assert!(is_plain_safe("/usr/local/sbin/kubezero-bootstrap"));
        assert!(!is_plain_safe("0644"));
        assert!(!is_plain_safe("yes"));
        assert!(!is_plain_safe("a: b"));
        assert!(!is_plain_safe("-x"));
        assert!(is_block_safe("a\nb\n"));
        assert!(!is_block_safe("  a\nb\n"));
        assert!(!is_block_safe("a\r\nb"));
        assert_eq!(double_quoted("a\"b\n"), r#""a\"b\n""#);
    }

    #[test]
    fn document_layout() {
        let doc = Node::Map(vec![
            ("a", Node::str("x")),
            (
                "b",
                Node::Seq(vec![Node::Map(vec![
                    ("p", Node::str("/e")),
                    ("c", Node::str("l1\nl2\n")),
                ])]),
            ),
            ("c", Node::Map(vec![("enabled", Node::Bool(true))])),
            ("d", Node::strs(["0600"])),
        ]);
        assert_eq!(
            document("#h", &doc),
            "#h\na: x\nb:\n- p: /e\n  c: |\n    l1\n    l2\nc:\n  enabled: true\nd:\n- \"0600\"\n"
        );
    }
}
