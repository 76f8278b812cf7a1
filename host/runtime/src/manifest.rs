//! `capability.toml`: the plugin manifest, parsed strictly (`deny_unknown_fields`) with
//! errors that name the offending field.
//!
//! ```toml
//! id = "weather"
//! version = "1.0.0"
//! description = "Current weather by city"
//! component = "weather.wasm"
//! sha256 = "…"                      # optional; checked when present
//! hooks = ["before-tool"]           # 0.2.0 hooks the plugin implements (the host calls only these)
//! on_error = "block"                # a hook that traps or times out: "block" (default) or "allow"
//!
//! [permissions]
//! allowed_hosts = ["https://api.open-meteo.com", "https://*.example.com:8443"]
//! secrets = ["WEATHER_API_KEY"]
//! kv = true                         # durable key-value state
//! kv_scope = "agent"                # or "session"
//!
//! [limits]
//! memory_mib = 32
//! timeout_ms = 5000
//! fuel = 1_000_000_000              # optional instruction budget per call
//! hook_timeout_ms = 250             # per hook call (default 250, at most 5000)
//! kv_max_keys = 1000                # key-value quota per owner (at most the operator's)
//! kv_max_bytes = 1_048_576
//!
//! [config]
//! schema = { type = "object", properties = { units = { type = "string" } } }
//! defaults = { units = "metric" }
//! ```

use std::path::{Component as PathComponent, Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::id::CapabilityId;
use crate::permissions::HostPattern;

/// The manifest's file name inside a plugin directory.
pub const MANIFEST_FILE: &str = "capability.toml";

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Capability id.
    pub id: CapabilityId,
    /// Plugin version (semver).
    pub version: String,
    /// One line for humans.
    pub description: String,
    /// The component file, relative to the manifest's directory.
    pub component: PathBuf,
    /// Expected lowercase hex sha256 of the component, if pinned.
    pub sha256: Option<String>,
    /// Requested permissions.
    pub permissions: RequestedPermissions,
    /// Requested limits.
    pub limits: Limits,
    /// JSON Schema of the plugin's config (an object), if given.
    pub config_schema: Option<serde_json::Value>,
    /// Default config (a JSON object; `{}` if not given).
    pub config_defaults: serde_json::Value,
    /// The hooks the plugin implements (WIT 0.2.0), in the order listed; no duplicates.
    pub hooks: Vec<Hook>,
    /// What a hook that traps or times out means.
    pub on_error: OnError,
}

/// A hook of the WIT 0.2.0 `hooks` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// `before-model`: before each model call.
    BeforeModel,
    /// `before-tool`: before each tool call runs.
    BeforeTool,
    /// `after-tool`: after each tool call, before its result is stored or sent.
    AfterTool,
}

impl Hook {
    /// The hook's WIT name, e.g. `before-tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::BeforeModel => "before-model",
            Hook::BeforeTool => "before-tool",
            Hook::AfterTool => "after-tool",
        }
    }
}

/// What a hook call that traps or exceeds its deadline means (manifest `on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail closed: the model call or tool call is blocked (the default).
    #[default]
    Block,
    /// Fail open: the hook is skipped.
    Allow,
}

/// Whom key-value state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvScopeKind {
    /// Shared by all sessions of an agent.
    Agent,
    /// Private to one session.
    Session,
}

/// What the manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedPermissions {
    /// Destinations for outgoing HTTP.
    pub allowed_hosts: Vec<HostPattern>,
    /// Secret names.
    pub secrets: Vec<String>,
    /// Whether key-value state is requested.
    pub kv: bool,
    /// Its scope.
    pub kv_scope: KvScopeKind,
}

/// Per-call limits requested by the manifest (`None`: the runtime's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Linear memory cap in MiB.
    pub memory_mib: Option<u64>,
    /// Wall-clock budget per call in ms.
    pub timeout_ms: Option<u64>,
    /// Fuel (roughly, wasm instructions) per call.
    pub fuel: Option<u64>,
    /// Wall-clock budget per hook call in ms.
    pub hook_timeout_ms: Option<u64>,
    /// Most key-value keys per owner (at most the operator's `plugin_kv_max_keys`).
    pub kv_max_keys: Option<u64>,
    /// Most key-value bytes (keys and values) per owner (at most `plugin_kv_max_bytes`).
    pub kv_max_bytes: Option<u64>,
}

/// Longest accepted call timeout: 10 minutes.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Default deadline of one hook call.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 250;
/// Longest accepted hook deadline.
pub const MAX_HOOK_TIMEOUT_MS: u64 = 5_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    version: String,
    #[serde(default)]
    description: String,
    component: String,
    sha256: Option<String>,
    #[serde(default)]
    hooks: Vec<Hook>,
    #[serde(default)]
    on_error: OnError,
    #[serde(default)]
    permissions: RawPermissions,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: RawConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    kv: bool,
    kv_scope: Option<KvScopeKind>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mib: Option<u64>,
    timeout_ms: Option<u64>,
    fuel: Option<u64>,
    hook_timeout_ms: Option<u64>,
    kv_max_keys: Option<u64>,
    kv_max_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    schema: Option<toml::Value>,
    defaults: Option<toml::Value>,
}

impl Manifest {
    /// Reads and validates `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates manifest text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |field: &str, message: String| Error::Manifest {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let raw: RawManifest = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner();
                let location = inner
                    .span()
                    .map(|span| {
                        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                        format!(" (line {line})")
                    })
                    .unwrap_or_default();
                err(&field, format!("{}{location}", inner.message().trim()))
            })?;

        let id = CapabilityId::parse(&raw.id).map_err(|e| err("id", e.to_string()))?;
        if !is_version(&raw.version) {
            return Err(err(
                "version",
                format!("`{}` is not a semantic version like 1.2.3", raw.version),
            ));
        }
        if raw.description.len() > 1000 {
            return Err(err("description", "longer than 1000 bytes".into()));
        }
        let component = PathBuf::from(&raw.component);
        let plain_relative = !raw.component.is_empty()
            && component
                .components()
                .all(|c| matches!(c, PathComponent::Normal(_)));
        if !plain_relative {
            return Err(err(
                "component",
                format!(
                    "`{}` must be a relative path inside the plugin directory",
                    raw.component
                ),
            ));
        }
        let sha256 = match raw.sha256 {
            Some(s) => {
                let s = s.to_ascii_lowercase();
                if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err("sha256", "must be 64 hex digits".into()));
                }
                Some(s)
            }
            None => None,
        };

        let mut allowed_hosts = Vec::new();
        for (i, host) in raw.permissions.allowed_hosts.iter().enumerate() {
            let pattern = host
                .parse::<HostPattern>()
                .map_err(|m| err(&format!("permissions.allowed_hosts[{i}]"), m))?;
            allowed_hosts.push(pattern);
        }
        for (i, name) in raw.permissions.secrets.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return Err(err(
                    &format!("permissions.secrets[{i}]"),
                    format!("`{name}` is not a valid secret name ([A-Za-z0-9_.-], 1-128 chars)"),
                ));
            }
        }
        if raw.permissions.kv_scope.is_some() && !raw.permissions.kv {
            return Err(err(
                "permissions.kv_scope",
                "set `kv = true` to request key-value state".into(),
            ));
        }

        let limits = Limits {
            memory_mib: raw.limits.memory_mib,
            timeout_ms: raw.limits.timeout_ms,
            fuel: raw.limits.fuel,
            hook_timeout_ms: raw.limits.hook_timeout_ms,
            kv_max_keys: raw.limits.kv_max_keys,
            kv_max_bytes: raw.limits.kv_max_bytes,
        };
        for (field, value) in [
            ("limits.kv_max_keys", limits.kv_max_keys),
            ("limits.kv_max_bytes", limits.kv_max_bytes),
        ] {
            if value == Some(0) {
                return Err(err(
                    field,
                    "must be at least 1 (a plugin without state sets `kv = false`)".into(),
                ));
            }
        }
        if let Some(t) = limits.hook_timeout_ms
            && !(1..=MAX_HOOK_TIMEOUT_MS).contains(&t)
        {
            return Err(err(
                "limits.hook_timeout_ms",
                format!("must be in 1..={MAX_HOOK_TIMEOUT_MS}"),
            ));
        }
        for (i, hook) in raw.hooks.iter().enumerate() {
            if raw.hooks[..i].contains(hook) {
                return Err(err(
                    &format!("hooks[{i}]"),
                    format!("`{}` is listed twice", hook.as_str()),
                ));
            }
        }
        if limits.memory_mib == Some(0) {
            return Err(err("limits.memory_mib", "must be at least 1".into()));
        }
        if let Some(t) = limits.timeout_ms
            && !(1..=MAX_TIMEOUT_MS).contains(&t)
        {
            return Err(err(
                "limits.timeout_ms",
                format!("must be in 1..={MAX_TIMEOUT_MS}"),
            ));
        }
        if limits.fuel == Some(0) {
            return Err(err("limits.fuel", "must be at least 1".into()));
        }

        let config_schema = match raw.config.schema {
            None => None,
            Some(value) => {
                let json = toml_or_json_string(value).map_err(|m| err("config.schema", m))?;
                if !json.is_object() {
                    return Err(err("config.schema", "must be a JSON Schema object".into()));
                }
                Some(json)
            }
        };
        let config_defaults = match raw.config.defaults {
            None => serde_json::Value::Object(Default::default()),
            Some(value) => {
                let json = toml_or_json_string(value).map_err(|m| err("config.defaults", m))?;
                if !json.is_object() {
                    return Err(err(
                        "config.defaults",
                        "must be a table (JSON object)".into(),
                    ));
                }
                json
            }
        };

        Ok(Manifest {
            id,
            version: raw.version,
            description: raw.description,
            component,
            sha256,
            permissions: RequestedPermissions {
                allowed_hosts,
                secrets: raw.permissions.secrets,
                kv: raw.permissions.kv,
                kv_scope: raw.permissions.kv_scope.unwrap_or(KvScopeKind::Agent),
            },
            limits,
            config_schema,
            config_defaults,
            hooks: raw.hooks,
            on_error: raw.on_error,
        })
    }

    /// The agent's config overlaid on the defaults (top-level keys replace defaults).
    pub fn effective_config(&self, agent_config: Option<&serde_json::Value>) -> serde_json::Value {
        let mut merged = self.config_defaults.clone();
        if let (Some(serde_json::Value::Object(over)), serde_json::Value::Object(base)) =
            (agent_config, &mut merged)
        {
            for (k, v) in over {
                base.insert(k.clone(), v.clone());
            }
        }
        merged
    }
}

/// A TOML value, or a string holding JSON, as JSON.
fn toml_or_json_string(value: toml::Value) -> Result<serde_json::Value, String> {
    match value {
        toml::Value::String(s) => {
            serde_json::from_str(&s).map_err(|e| format!("not valid JSON: {e}"))
        }
        other => serde_json::to_value(other).map_err(|e| format!("cannot convert to JSON: {e}")),
    }
}

fn is_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && v.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(text, Path::new("capability.toml"))
    }

    const MINIMAL: &str = "id = \"echo\"\nversion = \"0.1.0\"\ncomponent = \"echo.wasm\"\n";

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.id.as_str(), "echo");
        assert!(m.permissions.allowed_hosts.is_empty());
        assert!(!m.permissions.kv);
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.config_defaults, serde_json::json!({}));
    }

    #[test]
    fn full_manifest_parses() {
        let m = parse(
            r#"
id = "weather"
version = "1.2.3-beta.1"
description = "Weather"
component = "sub/weather.wasm"
sha256 = "ABCDEFabcdef0123456789abcdef0123456789abcdef0123456789abcdef0123"
[permissions]
allowed_hosts = ["https://api.example.com", "https://*.example.org:8443"]
secrets = ["API_KEY"]
kv = true
kv_scope = "session"
[limits]
memory_mib = 16
timeout_ms = 2500
fuel = 1000
[config]
schema = '{"type": "object"}'
defaults = { units = "metric", days = 3 }
"#,
        )
        .unwrap();
        assert_eq!(m.permissions.kv_scope, KvScopeKind::Session);
        assert_eq!(m.permissions.allowed_hosts.len(), 2);
        assert_eq!(m.limits.fuel, Some(1000));
        assert_eq!(m.config_schema, Some(serde_json::json!({"type": "object"})));
        let cfg = m.effective_config(Some(&serde_json::json!({"days": 5})));
        assert_eq!(cfg, serde_json::json!({"units": "metric", "days": 5}));
    }

    fn field_of(text: &str) -> String {
        match parse(text).unwrap_err() {
            Error::Manifest { field, .. } => field,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("id = \"x\"\nversion = \"0.1.0\"\n"), ".");
        assert_eq!(field_of(&format!("{MINIMAL}bogus = 1\n")), "bogus");
        assert_eq!(
            field_of(&format!(
                "{MINIMAL}[permissions]\nallowed_hosts = [\"https://ok.com\", \"nope\"]\n"
            )),
            "permissions.allowed_hosts[1]"
        );
        assert_eq!(
            field_of(&format!("{MINIMAL}[limits]\nmemory_mib = \"lots\"\n")),
            "limits.memory_mib"
        );
        assert_eq!(
            field_of(&format!("{MINIMAL}[limits]\ntimeout_ms = 0\n")),
            "limits.timeout_ms"
        );
        assert_eq!(
            field_of(&format!("{MINIMAL}[permissions]\nkvv = true\n")),
            "permissions.kvv"
        );
        assert_eq!(
            field_of("id = \"Bad Id\"\nversion = \"0.1.0\"\ncomponent = \"a.wasm\"\n"),
            "id"
        );
        assert_eq!(
            field_of("id = \"a\"\nversion = \"1\"\ncomponent = \"a.wasm\"\n"),
            "version"
        );
        assert_eq!(
            field_of("id = \"a\"\nversion = \"0.1.0\"\ncomponent = \"../a.wasm\"\n"),
            "component"
        );
        assert_eq!(
            field_of(&format!("{MINIMAL}[config]\ndefaults = '[1]'\n")),
            "config.defaults"
        );
        assert_eq!(
            field_of(&format!("hooks = [\"after-tool\", \"nope\"]\n{MINIMAL}")),
            "hooks[1]"
        );
        assert_eq!(
            field_of(&format!(
                "hooks = [\"after-tool\", \"after-tool\"]\n{MINIMAL}"
            )),
            "hooks[1]"
        );
        assert_eq!(
            field_of(&format!("on_error = \"ignore\"\n{MINIMAL}")),
            "on_error"
        );
        assert_eq!(
            field_of(&format!("{MINIMAL}[limits]\nhook_timeout_ms = 5001\n")),
            "limits.hook_timeout_ms"
        );
        assert_eq!(
            field_of(&format!("{MINIMAL}[limits]\nkv_max_keys = 0\n")),
            "limits.kv_max_keys"
        );
    }

    #[test]
    fn hooks_parse() {
        let m = parse(&format!(
            "hooks = [\"before-tool\", \"before-model\"]\non_error = \"allow\"\n{MINIMAL}[limits]\nhook_timeout_ms = 40\n"
        ))
        .unwrap();
        assert_eq!(m.hooks, vec![Hook::BeforeTool, Hook::BeforeModel]);
        assert_eq!(m.on_error, OnError::Allow);
        assert_eq!(m.limits.hook_timeout_ms, Some(40));
        let m = parse(MINIMAL).unwrap();
        assert!(m.hooks.is_empty());
        assert_eq!(m.on_error, OnError::Block);
    }
}
