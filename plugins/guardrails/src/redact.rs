//! Redaction of tool results: every match of any pattern becomes `[redacted]`. Text and
//! error text are redacted as they are; a JSON document is redacted inside its strings
//! (values and keys) and numbers, so it stays valid JSON. Compiling the patterns is most of
//! a call's cost (every call is a fresh instance), so [`may_match`] first asks whether any
//! text of the result contains a literal some match would have to start with.

use everruns_sdk::Output;
use regex::{NoExpand, Regex, RegexBuilder};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use serde_json::Value;

/// What a match is replaced with.
pub const MARK: &str = "[redacted]";

/// Largest compiled size of one pattern, so compiling stays well inside a hook's deadline.
const MAX_COMPILED_BYTES: usize = 1 << 20;

/// Whether any of `patterns` could match any of `texts`: `false` only when, for every
/// pattern, every match would have to start with one of finitely many literals and none of
/// them occurs in any text. A pattern that does not parse here answers `true` (compiling it
/// then reports it).
pub fn may_match(patterns: &[String], texts: &[&str]) -> bool {
    let occurs = |needle: &[u8]| {
        needle.is_empty()
            || texts
                .iter()
                .any(|t| t.as_bytes().windows(needle.len()).any(|w| w == needle))
    };
    patterns.iter().any(|pattern| {
        // Most patterns start with plain text: read it off without parsing (parsing costs
        // more than the rest of the hook).
        if let Some(prefix) = plain_prefix(pattern) {
            return occurs(prefix.as_bytes());
        }
        let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
            return true;
        };
        let prefixes = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
        match prefixes.literals() {
            None => true,
            Some(literals) => literals.iter().any(|literal| occurs(literal.as_bytes())),
        }
    })
}

/// The text every match of `pattern` starts with, when the pattern starts with plain text
/// and has no alternation: the characters before its first metacharacter, less the last one
/// when a quantifier that allows none of it follows (`?`, `*`, `{`). `None` (ask the parser)
/// for anything else: flags, classes, escapes, anchors or alternation first.
fn plain_prefix(pattern: &str) -> Option<&str> {
    const META: &[char] = &[
        '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$', '|', '#', ' ',
    ];
    if pattern.contains('|') {
        return None;
    }
    let end = pattern.find(META).unwrap_or(pattern.len());
    let mut prefix = &pattern[..end];
    if matches!(pattern[end..].chars().next(), Some('?' | '*' | '{')) {
        let last = prefix.chars().next_back()?;
        prefix = &prefix[..prefix.len() - last.len_utf8()];
    }
    (!prefix.is_empty()).then_some(prefix)
}

/// Every text of a result a redaction would look at: the text itself, or a JSON document's
/// strings, keys and numbers (as text); a JSON output that does not parse, as text.
pub fn texts_of(result: &Result<Output, String>) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => {
                for (key, item) in map {
                    out.push(key.clone());
                    walk(item, out);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
    match result {
        Ok(Output::Text(text)) | Err(text) => vec![text.clone()],
        Ok(Output::Json(json)) => match serde_json::from_str::<Value>(json) {
            Ok(value) => {
                let mut out = Vec::new();
                walk(&value, &mut out);
                out
            }
            Err(_) => vec![json.clone()],
        },
    }
}

/// Compiled redaction patterns.
pub struct Redactor {
    patterns: Vec<Regex>,
}

impl Redactor {
    /// Compiles `patterns`; the error names the first one that is not a valid (or is too
    /// large a) regular expression.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                RegexBuilder::new(p)
                    .size_limit(MAX_COMPILED_BYTES)
                    .build()
                    .map_err(|e| format!("`{p}`: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// `text` with every match replaced; `None` when nothing matched.
    pub fn text(&self, text: &str) -> Option<String> {
        let mut changed = None::<String>;
        for pattern in &self.patterns {
            let current = changed.as_deref().unwrap_or(text);
            if let std::borrow::Cow::Owned(next) = pattern.replace_all(current, NoExpand(MARK)) {
                changed = Some(next);
            }
        }
        changed
    }

    /// A tool output with every match replaced; `None` when nothing matched. A JSON output
    /// that does not parse (the host checks that it does) is redacted as text.
    pub fn output(&self, output: &Output) -> Option<Output> {
        match output {
            Output::Text(text) => self.text(text).map(Output::Text),
            Output::Json(json) => match serde_json::from_str::<Value>(json) {
                Ok(mut value) => self
                    .value(&mut value)
                    .then(|| Output::Json(value.to_string())),
                Err(_) => self.text(json).map(Output::Text),
            },
        }
    }

    /// Redacts `value` in place (strings, object keys, numbers as text; a redacted number
    /// becomes a string); returns whether anything changed.
    pub fn value(&self, value: &mut Value) -> bool {
        match value {
            Value::String(s) => match self.text(s) {
                Some(redacted) => {
                    *s = redacted;
                    true
                }
                None => false,
            },
            Value::Number(n) => match self.text(&n.to_string()) {
                Some(redacted) => {
                    *value = Value::String(redacted);
                    true
                }
                None => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| self.value(item) | changed),
            Value::Object(map) => {
                let mut changed = false;
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    changed |= self.value(&mut item);
                    let key = match self.text(&key) {
                        Some(redacted) => {
                            changed = true;
                            redacted
                        }
                        None => key,
                    };
                    // Two keys redacted to the same text keep the last value: still valid
                    // JSON, and nothing secret survives.
                    map.insert(key, item);
                }
                changed
            }
            Value::Null | Value::Bool(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor(patterns: &[&str]) -> Redactor {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Redactor::new(&patterns).unwrap()
    }

    fn may(patterns: &[&str], texts: &[&str]) -> bool {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        may_match(&patterns, texts)
    }

    #[test]
    fn results_that_cannot_match_skip_compiling() {
        assert!(!may(&["secret-[0-9]+"], &["pong", "secret"]));
        assert!(may(&["secret-[0-9]+"], &["a secret-1"]));
        // Case-insensitive, alternations and classes expand into their literals.
        assert!(may(&["(?i)sk-[a-z]+"], &["SK-abc"]));
        assert!(!may(&["(?i)sk-[a-z]+"], &["nothing"]));
        assert!(may(&["ab|cd"], &["xcd"]) && !may(&["ab|cd"], &["ac"]));
        // No finite set of starting literals: always compiled.
        assert!(may(&[r"\w+"], &["?"]) && may(&[".*x"], &[""]) && may(&["a?"], &["z"]));
        // Not parseable here: left to the compiler to report.
        assert!(may(&["("], &["x"]));
        // Every text of a JSON result is looked at, decoded (escapes included).
        let json = Ok(Output::Json(r#"{"k\u00e9y": ["t\u00f6ken-1", 42]}"#.into()));
        let texts = texts_of(&json);
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert!(may(&["tök"], &texts) && may(&["kéy"], &texts) && may(&["42"], &texts));
        assert!(!may(&["secret"], &texts));
    }

    #[test]
    fn plain_prefixes_agree_with_the_parser() {
        assert_eq!(plain_prefix("secret-[0-9]+"), Some("secret-"));
        assert_eq!(plain_prefix("abc?d"), Some("ab"));
        assert_eq!(plain_prefix("abc{0,2}d"), Some("ab"));
        assert_eq!(plain_prefix("abc+"), Some("abc"));
        assert_eq!(plain_prefix("tök"), Some("tök"));
        assert_eq!(plain_prefix("a b"), Some("a"));
        for pattern in ["a?", ".*x", r"\w+", "(?i)sk", "ab|cd", "^ab", "[a]b"] {
            assert_eq!(plain_prefix(pattern), None, "{pattern}");
        }
        // Never "cannot match" where the parser's literals say it may (the prefix can only
        // be less precise, never wrong).
        let parsed = |pattern: &str, text: &str| {
            let hir = regex_syntax::Parser::new().parse(pattern).unwrap();
            let prefixes = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
            prefixes.literals().is_none_or(|literals| {
                literals
                    .iter()
                    .any(|l| text.as_bytes().windows(l.len()).any(|w| w == l.as_bytes()))
            })
        };
        for pattern in [
            "secret-[0-9]+",
            "abc?d",
            "abc{0,2}d",
            "abc+",
            "tök",
            "sk-[A-Za-z]+",
        ] {
            for text in [
                "secret-1", "secret", "abd", "abcd", "ab", "xtöky", "sk-a", "sk",
            ] {
                assert!(
                    may(&[pattern], &[text]) || !parsed(pattern, text),
                    "{pattern} on {text}"
                );
            }
        }
    }

    #[test]
    fn text_matches_become_marks() {
        let r = redactor(&[r"sk-[A-Za-z0-9]+", r"\d{3}-\d{4}"]);
        assert_eq!(
            r.text("key sk-abc123 and 555-1234, sk-Z").as_deref(),
            Some("key [redacted] and [redacted], [redacted]")
        );
        assert_eq!(r.text("nothing here"), None);
        // `$` in the mark's place is literal, never a group reference.
        assert_eq!(redactor(&["a"]).text("a").as_deref(), Some(MARK));
    }

    #[test]
    fn json_stays_valid_json() {
        let r = redactor(&[r"secret\w*", r"^\d{16}$"]);
        let out = Output::Json(
            json!({
                "note": "the secret_token is \"secretXYZ\"",
                "list": ["fine", "secret"],
                "secret_key": true,
                "card": 4111111111111111u64,
                "count": 2
            })
            .to_string(),
        );
        let Some(Output::Json(redacted)) = r.output(&out) else {
            panic!("expected a redacted JSON output");
        };
        let value: Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!(
            value,
            json!({
                "note": "the [redacted] is \"[redacted]\"",
                "list": ["fine", "[redacted]"],
                "[redacted]": true,
                "card": "[redacted]",
                "count": 2
            })
        );
        assert_eq!(r.output(&Output::Json(r#"{"a":"b"}"#.into())), None);
    }

    #[test]
    fn invalid_patterns_are_named() {
        let err = Redactor::new(&["ok".into(), "(unclosed".into()])
            .err()
            .unwrap();
        assert!(err.starts_with("`(unclosed`"), "{err}");
    }
}
