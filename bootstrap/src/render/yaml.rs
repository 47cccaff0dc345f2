//! The YAML of the user-data documents, emitted by serde-saphyr.
//!
//! The renderers need byte-stable output (golden files) with readable literal blocks for the boot script
//! and the kubeadm config, and they emit only maps, sequences, strings and booleans. This module
//! chooses each string's style, serde-saphyr writes it: a plain scalar only when it is unambiguously a
//! string to YAML 1.1 and 1.2 readers, a literal block (`|`, `|-`, `|+`) for multi-line text without
//! characters a block cannot carry, else a double-quoted scalar with YAML escapes, so any input
//! round-trips. Keys keep the order the renderer gives; block scalars are never folded.

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
    // Long single-line strings stay single-line: a folded block (`>`) would make the output depend
    // on line widths.
    let options = serde_saphyr::ser_options! {
        prefer_block_scalars: false,
    };
    // Infallible: the options are valid, a String never fails to be written to, and a Node holds
    // only string keys, strings, booleans and collections of them.
    let body = serde_saphyr::to_string_with_options(root, options).expect("a Node always serializes");
    format!("{header}\n{body}")
}

/// Maps and sequences as they are; each string in the style [`is_plain_safe`] / [`is_block_safe`]
/// choose.
impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap as _, SerializeSeq as _};
        match self {
            Node::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
            Node::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Bool(value) => serializer.serialize_bool(*value),
            Node::Str(s) if is_plain_safe(s) => serializer.serialize_str(s),
            Node::Str(s) if is_block_safe(s) => serde_saphyr::LitStr(s).serialize(serializer),
            Node::Str(s) => serde_saphyr::DoubleQuoted(s.as_str()).serialize(serializer),
        }
    }
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
        let quoted = Node::Map(vec![("k", Node::str("a\"b\r\n"))]);
        assert_eq!(document("#h", &quoted), "#h\nk: \"a\\\"b\\r\\n\"\n");
    }

    #[test]
    fn every_string_reads_back_as_itself() {
        let samples = [
            "kubelet~1.34",
            "0644",
            "yes",
            "a: b",
            "a #b",
            "-x",
            "*x",
            "'x",
            "a\\b",
            "a\tb",
            "\u{1}",
            "\u{7f}",
            "\u{85}",
            "\u{2028}",
            "a\u{2029}b\nc",
            "\u{feff}",
            "a\u{0}b",
            "a\r\nb",
            "é\nü\n",
            "a\nb",
            "a\nb\n",
            "a\nb\n\n\n",
            "\n",
            "\n\na",
            "  a\nb\n",
            "a\n \nb",
            "x\n# not a comment\n",
            "a\n---\nb\n",
            "",
            " ",
            "2001-12-14",
            "1e3",
            ".inf",
            "null",
            "~",
        ];
        for sample in samples {
            for node in [
                Node::Map(vec![("k", Node::str(sample))]),
                Node::Map(vec![(
                    "k",
                    Node::Seq(vec![Node::Map(vec![("c", Node::str(sample))])]),
                )]),
            ] {
                let yaml = document("#h", &node);
                let read: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
                let value = read["k"].as_str().or_else(|| read["k"][0]["c"].as_str());
                assert_eq!(value, Some(sample), "{yaml:?}");
            }
        }
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
