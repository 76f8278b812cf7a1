//! The loop guard's count: how often the current run has asked for the same tool with the
//! same arguments, kept in the session's key-value state under
//! `repeat/<run id>/<hash of name and canonical arguments>`. Runs of a session never overlap,
//! so when a new run starts the previous run's counts are deleted (`repeat-run` remembers
//! which run they belong to).

use everruns_sdk::{ToolRequest, kv, log};
use serde_json::Value;

const PREFIX: &str = "repeat/";
const CURRENT_RUN: &str = "repeat-run";
/// The host's key limit.
const MAX_KEY_BYTES: usize = 256;

/// Counts `call` for `run_id` and returns the new count (this call included). On a
/// key-value failure the guard cannot count: it logs and returns 0 (the call is not held
/// back by the loop guard; the other rules still apply).
pub fn count(run_id: &str, call: &ToolRequest) -> u64 {
    match try_count(run_id, call) {
        Ok(n) => n,
        Err(e) => {
            log::warn(&format!("guardrails: loop guard skipped: {e}"));
            0
        }
    }
}

fn try_count(run_id: &str, call: &ToolRequest) -> Result<u64, kv::KvError> {
    if kv::get::<String>(CURRENT_RUN)?.as_deref() != Some(run_id) {
        for key in kv::list(PREFIX)? {
            kv::delete(&key)?;
        }
        kv::set(CURRENT_RUN, run_id)?;
    }
    let key = key(run_id, &call.name, &call.arguments);
    let n = kv::get::<u64>(&key)?.unwrap_or(0) + 1;
    kv::set(&key, &n)?;
    Ok(n)
}

/// The counter's key; a run id too long for the key limit is hashed as well.
fn key(run_id: &str, name: &str, arguments: &Value) -> String {
    let call = fnv1a(&[name.as_bytes(), b"\0", canonical(arguments).as_bytes()]);
    let key = format!("{PREFIX}{run_id}/{call:016x}");
    if key.len() <= MAX_KEY_BYTES {
        key
    } else {
        format!("{PREFIX}{:016x}/{call:016x}", fnv1a(&[run_id.as_bytes()]))
    }
}

/// JSON with object keys sorted at every level, so the same arguments written in another
/// order count as the same call.
pub fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let fields: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// 64-bit FNV-1a over the concatenated parts: stable across builds and platforms.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({"b": [1, {"y": 2, "x": "s"}], "a": null});
        let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"s","y":2}]}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":null,"b":[1,{"x":"s","y":2}]}"#);
        assert_ne!(canonical(&json!({"a": 1})), canonical(&json!({"a": "1"})));
    }

    #[test]
    fn keys_fit_the_host_limit() {
        let args = json!({"path": "a"});
        let k = key("run_1", "session_files__read_file", &args);
        assert!(k.starts_with("repeat/run_1/"), "{k}");
        assert_eq!(k, key("run_1", "session_files__read_file", &args));
        assert_ne!(k, key("run_2", "session_files__read_file", &args));
        assert_ne!(
            k,
            key("run_1", "session_files__read_file", &json!({"path": "b"}))
        );
        assert!(key(&"r".repeat(400), "x", &args).len() <= MAX_KEY_BYTES);
        // The run marker is not a counter of any run.
        assert_ne!(k, CURRENT_RUN);
    }
}
