//! Redaction of tool results: every match of any pattern becomes `[redacted]`. Text and
//! error text are redacted as they are; a JSON document is redacted inside its strings
//! (values and keys) and numbers, so it stays valid JSON.

use everruns_sdk::Output;
use regex::{NoExpand, Regex, RegexBuilder};
use serde_json::Value;

/// What a match is replaced with.
pub const MARK: &str = "[redacted]";

/// Largest compiled size of one pattern, so compiling stays well inside a hook's deadline.
const MAX_COMPILED_BYTES: usize = 1 << 20;

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
