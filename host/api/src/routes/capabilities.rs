//! `/v1/capabilities`: the installed plugins, their tools and granted permissions, and the
//! plugin directories that failed to load (with the reason).
//!
//! Also home of [`validate_agent_capabilities`], the check that an agent only enables loaded
//! plugins with a config their schema accepts: it needs the same view of the runtime.

use std::path::Path as FsPath;

use axum::Json;
use axum::extract::{Path, State};
use everruns_runtime::{KvScopeKind, LoadFailure, Plugin, Runtime};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, FieldError, QueryErrors};
use crate::routes::agents::CapabilityBody;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_capabilities))
        .routes(routes!(get_capability))
}

/// Whether a plugin is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapabilityStatus {
    /// Loaded: its tools can be called.
    Loaded,
    /// Its directory failed to load; `error` says why.
    Failed,
}

/// A tool a capability offers to the model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolResponse {
    #[schema(example = "greet")]
    pub name: String,
    pub description: String,
    /// JSON Schema of the tool's arguments.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
}

/// What the plugin was granted: what its manifest requests, narrowed by the operator.
#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionsResponse {
    /// Destinations for outgoing HTTP, as `scheme://host[:port]` (`*.` for subdomains).
    pub allowed_hosts: Vec<String>,
    /// Secret names the plugin may read.
    pub secrets: Vec<String>,
    /// Scope of durable key-value state (`agent` or `session`); null without key-value state.
    #[schema(value_type = Option<String>, example = "session")]
    pub kv: Option<&'static str>,
    /// Whether allowed names may resolve to loopback, private or link-local addresses.
    pub allow_private_networks: bool,
}

/// Limits every call runs under.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsResponse {
    /// Linear memory cap, in MiB.
    pub memory_mib: u64,
    /// Wall-clock budget per call, in milliseconds.
    pub timeout_ms: u64,
    /// Fuel (roughly, WASM instructions) per call; null when not metered.
    pub fuel: Option<u64>,
    /// Key-value quota per owner (agent or session); null without key-value state.
    pub kv_quota: Option<KvQuotaResponse>,
}

/// How much key-value state the plugin may keep per owner: its manifest's `[limits]` within
/// the operator's `plugin_kv_max_keys` and `plugin_kv_max_bytes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KvQuotaResponse {
    /// Most keys.
    #[schema(example = 10000)]
    pub max_keys: u64,
    /// Most bytes, keys and values together.
    #[schema(example = 16777216)]
    pub max_bytes: u64,
}

/// An installed capability (plugin), or a plugin directory that failed to load.
#[derive(Debug, Serialize, ToSchema)]
pub struct CapabilityResponse {
    /// Capability id; for a plugin that failed to load, its directory name.
    #[schema(example = "current_time")]
    pub id: String,
    pub status: CapabilityStatus,
    /// Why loading failed. On a loaded plugin: why the latest change to its directory was
    /// rejected (the previous version keeps serving).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Null when the plugin failed to load.
    #[schema(example = "0.1.0")]
    pub version: Option<String>,
    pub description: Option<String>,
    /// SHA-256 of the component, hex; null when the plugin failed to load.
    pub digest: Option<String>,
    /// Empty when the plugin failed to load.
    pub tools: Vec<ToolResponse>,
    /// Null when the plugin failed to load.
    pub permissions: Option<PermissionsResponse>,
    /// Null when the plugin failed to load.
    pub limits: Option<LimitsResponse>,
    /// JSON Schema an agent's config for this capability must satisfy; null if none.
    #[schema(value_type = Option<Object>)]
    pub config_schema: Option<serde_json::Value>,
    /// Config values used where an agent sets none.
    #[schema(value_type = Option<Object>)]
    pub config_defaults: Option<serde_json::Value>,
}

/// Every capability; not paginated (the plugin directory is small).
#[derive(Debug, Serialize, ToSchema)]
pub struct CapabilityList {
    pub data: Vec<CapabilityResponse>,
    /// Always null: the whole list is one page.
    pub next_cursor: Option<String>,
    /// Number of items in `data`.
    pub total: u64,
}

fn dir_name(dir: &FsPath) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// The load failure that concerns `plugin`: its own directory, or one named after its id.
fn failure_of<'a>(plugin: &Plugin, failures: &'a [LoadFailure]) -> Option<&'a LoadFailure> {
    failures
        .iter()
        .find(|f| f.dir == plugin.dir() || dir_name(&f.dir) == plugin.id().as_str())
}

fn loaded(plugin: &Plugin, failures: &[LoadFailure]) -> CapabilityResponse {
    let manifest = plugin.manifest();
    let granted = plugin.permissions();
    CapabilityResponse {
        id: plugin.id().to_string(),
        status: CapabilityStatus::Loaded,
        error: failure_of(plugin, failures).map(|f| f.error.clone()),
        version: Some(manifest.version.clone()),
        description: Some(manifest.description.clone()),
        digest: Some(plugin.digest().to_owned()),
        tools: plugin
            .tools()
            .iter()
            .map(|t| ToolResponse {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            })
            .collect(),
        permissions: Some(PermissionsResponse {
            allowed_hosts: granted
                .allowed_hosts
                .iter()
                .map(|h| h.to_string())
                .collect(),
            secrets: granted.secrets.iter().cloned().collect(),
            kv: granted.kv.map(|scope| match scope {
                KvScopeKind::Agent => "agent",
                KvScopeKind::Session => "session",
            }),
            allow_private_networks: granted.allow_private_networks,
        }),
        limits: Some(LimitsResponse {
            memory_mib: plugin.memory_limit_mib(),
            timeout_ms: plugin.timeout_ms(),
            fuel: manifest.limits.fuel,
            kv_quota: granted.kv.map(|_| KvQuotaResponse {
                max_keys: granted.kv_quota.max_keys,
                max_bytes: granted.kv_quota.max_bytes,
            }),
        }),
        config_schema: manifest.config_schema.clone(),
        config_defaults: Some(manifest.config_defaults.clone()),
    }
}

fn failed(failure: &LoadFailure) -> CapabilityResponse {
    CapabilityResponse {
        id: dir_name(&failure.dir),
        status: CapabilityStatus::Failed,
        error: Some(failure.error.clone()),
        version: None,
        description: None,
        digest: None,
        tools: Vec::new(),
        permissions: None,
        limits: None,
        config_schema: None,
        config_defaults: None,
    }
}

/// Loaded plugins, then failures that do not belong to a loaded plugin; sorted by id.
fn all_capabilities(runtime: &Runtime) -> Vec<CapabilityResponse> {
    let plugins = runtime.plugins();
    let failures = runtime.failures();
    let mut items: Vec<CapabilityResponse> = plugins.iter().map(|p| loaded(p, &failures)).collect();
    items.extend(
        failures
            .iter()
            .filter(|f| {
                !plugins
                    .iter()
                    .any(|p| failure_of(p, std::slice::from_ref(f)).is_some())
            })
            .map(failed),
    );
    // Loaded before failed when ids tie (declaration order of the status).
    items.sort_by(|a, b| (&a.id, a.status).cmp(&(&b.id, b.status)));
    items
}

/// List capabilities: installed plugins and plugin directories that failed to load.
#[utoipa::path(
    get, path = "/v1/capabilities", tag = "capabilities",
    responses(
        (status = 200, description = "Every capability", body = CapabilityList),
        QueryErrors,
    )
)]
async fn list_capabilities(State(state): State<AppState>) -> Json<CapabilityList> {
    let data = all_capabilities(&state.runtime);
    Json(CapabilityList {
        total: data.len() as u64,
        data,
        next_cursor: None,
    })
}

/// Get a capability.
#[utoipa::path(
    get, path = "/v1/capabilities/{id}", tag = "capabilities",
    params(("id" = String, Path, description = "Capability id (or the directory name of a \
                                                plugin that failed to load)")),
    responses(
        (status = 200, description = "The capability", body = CapabilityResponse),
        QueryErrors,
    )
)]
async fn get_capability(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CapabilityResponse>> {
    if let Some(plugin) = state.runtime.get(&id) {
        return Ok(Json(loaded(&plugin, &state.runtime.failures())));
    }
    state
        .runtime
        .failures()
        .iter()
        .find(|f| dir_name(&f.dir) == id)
        .map(|f| Json(failed(f)))
        .ok_or_else(|| {
            let shown: String = id.chars().take(100).collect();
            ApiError::not_found(format!("capability `{shown}` not found"))
        })
}

/// Checks that every capability of an agent is a loaded plugin and that its config satisfies
/// the plugin's config schema. Only call after the ids and configs are well-formed.
pub(crate) fn validate_agent_capabilities(
    runtime: &Runtime,
    caps: &[CapabilityBody],
    errors: &mut Vec<FieldError>,
) {
    for (i, cap) in caps.iter().enumerate() {
        let Some(plugin) = runtime.get(&cap.id) else {
            errors.push(FieldError::new(
                format!("capabilities[{i}].id"),
                unknown_capability(runtime, &cap.id),
            ));
            continue;
        };
        let Some(schema) = &plugin.manifest().config_schema else {
            continue;
        };
        // Formats are checked (not only annotations), `regex` in the syntax plugins use.
        let validator = match jsonschema::options()
            .should_validate_formats(true)
            .with_format("regex", |s: &str| regex::Regex::new(s).is_ok())
            .build(schema)
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(capability = %cap.id, error = %e, "plugin config schema is invalid");
                errors.push(FieldError::new(
                    format!("capabilities[{i}].config"),
                    format!(
                        "capability `{}` has an invalid config schema, so no config can be \
                         validated: {e}",
                        cap.id
                    ),
                ));
                continue;
            }
        };
        for error in validator.iter_errors(&cap.config) {
            errors.push(FieldError::new(
                format!(
                    "capabilities[{i}].config{}",
                    pointer_to_path(&error.instance_path().to_string())
                ),
                error.to_string(),
            ));
        }
    }
}

fn unknown_capability(runtime: &Runtime, id: &str) -> String {
    if let Some(f) = runtime.failures().iter().find(|f| dir_name(&f.dir) == id) {
        return format!("capability `{id}` failed to load: {}", f.error);
    }
    let mut installed: Vec<String> = runtime
        .plugins()
        .iter()
        .map(|p| p.id().to_string())
        .collect();
    installed.sort();
    if installed.is_empty() {
        format!("no capability `{id}` is installed (no capabilities are installed)")
    } else {
        format!(
            "no capability `{id}` is installed; installed: {}",
            installed.join(", ")
        )
    }
}

/// `/a/0/b~1c` -> `.a[0].b/c`: a JSON Pointer in the notation of the other field names.
fn pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            path.push('.');
            path.push_str(&segment);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::pointer_to_path;

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(pointer_to_path("/greeting"), ".greeting");
        assert_eq!(pointer_to_path("/a/0/b~1c~0"), ".a[0].b/c~");
    }
}
