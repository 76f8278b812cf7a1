//! The text rules the API enforces, in one place: each is a regular expression that the
//! handlers check requests against and that [`document`] writes into the OpenAPI document
//! (as the `pattern` of the properties and parameters it governs), so the document and the
//! server cannot disagree. The expressions use only syntax that means the same in Rust's
//! `regex`, ECMA-262 (JSON Schema) and Python's `re` (what fuzzers generate from): classes,
//! ranges, `\xNN` escapes and literal characters.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use regex::Regex;
use utoipa::openapi::schema::{ArrayItems, Schema};
use utoipa::openapi::{OpenApi, RefOr};

/// A character that is neither a control character nor whitespace (as Rust's `char`
/// methods define them: Unicode `Cc` and `White_Space`).
macro_rules! visible {
    () => {
        "[^\\x00-\\x20\\x7F-\\xA0\u{1680}\u{2000}-\u{200A}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}]"
    };
}
/// Any character but a control character.
macro_rules! not_control {
    () => {
        "[^\\x00-\\x1F\\x7F-\\x9F]"
    };
}

/// Names (agents, providers, API keys): no control characters, not starting or ending with
/// whitespace (so not blank).
pub(crate) const NAME: &str = concat!("^", visible!(), "(", not_control!(), "*", visible!(), ")?$");
/// Free text that must say something (model names): no control characters, not blank.
pub(crate) const TEXT: &str = concat!("^", not_control!(), "*", visible!(), not_control!(), "*$");
/// Long text the store keeps (prompts, titles, reasons): anything but NUL.
pub(crate) const NO_NUL: &str = "^[^\\x00]*$";
/// A message: anything but NUL, not blank (some character is not whitespace).
pub(crate) const CONTENT: &str = concat!(
    "^[^\\x00]*",
    "[^\\x00\\x09-\\x0D\\x20\\x85\\xA0\u{1680}\u{2000}-\u{200A}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}]",
    "[^\\x00]*$"
);
/// A list cursor: what `next_cursor` gave, never control characters.
pub(crate) const CURSOR: &str = concat!("^", not_control!(), "+$");
/// A capability id: letters, digits, `_`, `-`, `.`.
pub(crate) const CAPABILITY_ID: &str = "^[A-Za-z0-9_.-]+$";
/// A tool approval pattern: tool-name characters and the wildcards `*` and `?`.
pub(crate) const TOOL_PATTERN: &str = "^[A-Za-z0-9_.*?-]+$";
/// A secret name: letters, digits, `_`, `.`, `-`.
pub(crate) const SECRET_NAME: &str = "^[A-Za-z0-9_.-]+$";
/// An API key of a provider: no whitespace, no control characters (may be empty).
pub(crate) const TOKEN: &str = concat!("^", visible!(), "*$");
/// An `Idempotency-Key`: visible ASCII, inner spaces allowed.
pub(crate) const HEADER_TOKEN: &str = "^[\\x21-\\x7E]([\\x20-\\x7E]*[\\x21-\\x7E])?$";
/// A provider's base URL: `http(s)://host[:port][/path]`, a host name or IPv4 address (no
/// credentials, query or fragment).
pub(crate) const BASE_URL: &str = concat!(
    "^https?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?",
    "(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    "(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?$"
);

/// Whether `text` follows `rule` (one of the constants above).
pub(crate) fn matches(rule: &'static str, text: &str) -> bool {
    static COMPILED: LazyLock<Mutex<HashMap<&'static str, Regex>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let regex = COMPILED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(rule)
        .or_insert_with(|| Regex::new(rule).expect("the rules are valid expressions"))
        .clone();
    regex.is_match(text)
}

/// Which schema properties each rule governs: (schema, property, rule). A property that is
/// an array gets the rule on its items.
const PROPERTIES: &[(&str, &str, &str)] = &[
    ("CreateAgent", "name", NAME),
    ("UpdateAgent", "name", NAME),
    ("CreateAgent", "system_prompt", NO_NUL),
    ("UpdateAgent", "system_prompt", NO_NUL),
    ("CreateProvider", "name", NAME),
    ("UpdateProvider", "name", NAME),
    ("CreateApiKey", "name", NAME),
    ("CreateProvider", "base_url", BASE_URL),
    ("UpdateProvider", "base_url", BASE_URL),
    ("CreateProvider", "api_key", TOKEN),
    ("UpdateProvider", "api_key", TOKEN),
    ("CreateProvider", "default_model", TEXT),
    ("UpdateProvider", "default_model", TEXT),
    ("CreateProvider", "models", TEXT),
    ("UpdateProvider", "models", TEXT),
    ("ModelSettingsBody", "provider", TEXT),
    ("ModelSettingsBody", "model", TEXT),
    ("CapabilityBody", "id", CAPABILITY_ID),
    ("CapabilityOverrideBody", "id", CAPABILITY_ID),
    ("ToolApprovalBody", "require", TOOL_PATTERN),
    ("OverridesBody", "system_prompt_append", NO_NUL),
    ("CreateSession", "title", NO_NUL),
    ("UpdateSession", "title", NO_NUL),
    ("PostMessage", "content", CONTENT),
    ("DecideBody", "reason", NO_NUL),
];

/// Lengths (in characters) of the items of array properties: (schema, property, min, max).
const ITEM_LENGTHS: &[(&str, &str, usize, usize)] = &[
    ("ToolApprovalBody", "require", 1, 256),
    ("CreateProvider", "models", 1, 200),
    ("UpdateProvider", "models", 1, 200),
];

/// Which parameters each rule governs, wherever they appear: (name, rule).
const PARAMETERS: &[(&str, &str)] = &[
    ("cursor", CURSOR),
    ("Idempotency-Key", HEADER_TOKEN),
    ("name", SECRET_NAME),
];

/// Writes every rule into `doc`; a rule naming a schema, property or parameter the
/// document lacks is a bug (a renamed field), caught by the tests.
pub(crate) fn document(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for (schema, property, rule) in PROPERTIES {
        if let Some(target) = property_of(components, schema, property) {
            set(target, &|object| object.pattern = Some((*rule).to_owned()));
        }
    }
    for (schema, property, min, max) in ITEM_LENGTHS {
        if let Some(target) = property_of(components, schema, property) {
            set(target, &|object| {
                object.min_length = Some(*min);
                object.max_length = Some(*max);
            });
        }
    }
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            for parameter in operation.parameters.iter_mut().flatten() {
                if let Some((_, rule)) = PARAMETERS.iter().find(|(n, _)| *n == parameter.name)
                    && let Some(RefOr::T(schema)) = &mut parameter.schema
                {
                    set(schema, &|object| object.pattern = Some((*rule).to_owned()));
                }
            }
        }
    }
}

/// Property `property` of component schema `schema`, if the document has it.
fn property_of<'a>(
    components: &'a mut utoipa::openapi::Components,
    schema: &str,
    property: &str,
) -> Option<&'a mut Schema> {
    match components.schemas.get_mut(schema)? {
        RefOr::T(Schema::Object(object)) => match object.properties.get_mut(property)? {
            RefOr::T(target) => Some(target),
            RefOr::Ref(_) => None,
        },
        _ => None,
    }
}

/// Applies `change` to the string schema `schema` is, or holds as its items.
fn set(schema: &mut Schema, change: &dyn Fn(&mut utoipa::openapi::schema::Object)) {
    match schema {
        Schema::Object(object) => change(object),
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items
                && let RefOr::T(items) = items.as_mut()
            {
                set(items, change);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_accept_and_refuse_what_they_say() {
        for ok in ["a", "support bot", "Ünïcode ✓", "x y"] {
            assert!(matches(NAME, ok), "{ok:?}");
        }
        for bad in ["", " a", "a ", "a\tb", "\u{3000}", "a\u{0}", "\u{a0}x"] {
            assert!(!matches(NAME, bad), "{bad:?}");
        }
        assert!(matches(TEXT, " gpt-4o ") && !matches(TEXT, "  ") && !matches(TEXT, ""));
        assert!(matches(NO_NUL, "") && !matches(NO_NUL, "a\0"));
        assert!(matches(CONTENT, "\n hi \t") && !matches(CONTENT, " \n\u{3000}"));
        assert!(matches(CONTENT, "\u{1}") && !matches(CONTENT, "a\0"));
        assert!(matches(CURSOR, "agt_1") && !matches(CURSOR, "") && !matches(CURSOR, "a\n"));
        assert!(matches(TOOL_PATTERN, "*__delete_?") && !matches(TOOL_PATTERN, "[a]"));
        assert!(matches(HEADER_TOKEN, "a b") && !matches(HEADER_TOKEN, " a"));
        assert!(!matches(HEADER_TOKEN, "a\tb") && !matches(HEADER_TOKEN, "ä"));
        for ok in [
            "https://api.openai.com/v1",
            "http://127.0.0.1:65535",
            "http://localhost:8080/v1/",
        ] {
            assert!(matches(BASE_URL, ok), "{ok}");
        }
        for bad in [
            "ftp://x",
            "https://user@host",
            "https://host?q=1",
            "https://host#f",
            "https://host:65536",
            "https://",
            "https://-host",
        ] {
            assert!(!matches(BASE_URL, bad), "{bad}");
        }
    }

    #[test]
    fn every_rule_reaches_the_document() {
        let doc = crate::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        for (schema, property, rule) in PROPERTIES {
            let target = &json["components"]["schemas"][schema]["properties"][property];
            let pattern = target["pattern"]
                .as_str()
                .or(target["items"]["pattern"].as_str());
            assert_eq!(pattern, Some(*rule), "{schema}.{property}: {target}");
        }
        let documented: Vec<&str> = json["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .flat_map(|op| op["parameters"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| {
                let rule = p["schema"]["pattern"].as_str()?.to_owned();
                PARAMETERS.iter().find(|(_, r)| *r == rule).map(|(n, _)| *n)
            })
            .collect();
        for (name, _) in PARAMETERS {
            assert!(documented.contains(name), "parameter {name}");
        }
    }
}
