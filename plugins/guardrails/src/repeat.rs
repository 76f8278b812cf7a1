//! The loop guard's count: how often the current run has asked for the same tool with the
//! same arguments, kept in the session's key-value state as one value under `repeat`: the
//! run it counts for and a count per call (by a hash of its name and canonical arguments).
//! Runs of a session never overlap, so a new run simply starts the counts over. One read and
//! one write per call.

use std::collections::BTreeMap;

use everruns_sdk::{ToolRequest, kv, log};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const KEY: &str = "repeat";
/// Distinct calls counted per run; calls past it are not held back by the loop guard (the
/// value stays small: about 30 bytes a call).
const MAX_CALLS: usize = 1024;

/// What `repeat` holds.
#[derive(Serialize, Deserialize, Default)]
struct Counts {
    run: String,
    calls: BTreeMap<String, u64>,
}

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
    let mut counts = kv::get::<Counts>(KEY)?
        .filter(|counts| counts.run == run_id)
        .unwrap_or_else(|| Counts {
            run: run_id.to_owned(),
            calls: BTreeMap::new(),
        });
    let id = call_id(&call.name, &call.arguments);
    let n = counts.calls.get(&id).copied().unwrap_or(0) + 1;
    if counts.calls.len() < MAX_CALLS || counts.calls.contains_key(&id) {
        counts.calls.insert(id, n);
        kv::set(KEY, &counts)?;
    }
    Ok(n)
}

/// The counter of a call: a hash of its name and canonical arguments.
fn call_id(name: &str, arguments: &Value) -> String {
    format!(
        "{:016x}",
        fnv1a(&[name.as_bytes(), b"\0", canonical(arguments).as_bytes()])
    )
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
    fn calls_are_told_apart_by_name_and_arguments() {
        let args = json!({"path": "a"});
        let id = call_id("session_files__read_file", &args);
        assert_eq!(
            id,
            call_id("session_files__read_file", &json!({"path": "a"}))
        );
        assert_ne!(
            id,
            call_id("session_files__read_file", &json!({"path": "b"}))
        );
        assert_ne!(id, call_id("session_files__write_file", &args));
        assert_eq!(id.len(), 16);
    }
}
