//! Write Everruns capability plugins in plain Rust: tools are functions taking an
//! arguments struct, and one macro, [`export_capability!`], turns a type implementing
//! [`Capability`] into a WebAssembly component for the `everruns:capability@0.2.0` world.
//! A capability may also implement hooks ([`Capability::before_model`],
//! [`Capability::before_tool`], [`Capability::after_tool`]) to check or change what the
//! model is asked, stop or rewrite tool calls, and replace tool results; the manifest's
//! `hooks` list says which ones the host calls.
//!
//! ```no_run
//! use everruns_sdk::prelude::*;
//!
//! /// Arguments of `greet`. Doc comments become the JSON Schema's descriptions.
//! #[derive(Deserialize, JsonSchema)]
//! struct GreetArgs {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! fn greet(_ctx: &Context, args: GreetArgs) -> ToolResult {
//!     Ok(format!("Hello, {}!", args.name).into())
//! }
//!
//! struct Hello;
//!
//! impl Capability for Hello {
//!     fn tools(tools: &mut Tools) {
//!         tools.add("greet", "Greets someone by name", greet);
//!     }
//!
//!     fn system_prompt(_ctx: &Context) -> Option<String> {
//!         Some("Greet people with the `greet` tool.".into())
//!     }
//! }
//!
//! everruns_sdk::export_capability!(Hello, id = "hello", description = "Says hello");
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component, installed beside a `capability.toml`.
//!
//! Module map:
//! - `capability`: the [`Capability`] trait and the glue behind [`export_capability!`].
//! - `hooks`: what hooks see and answer: [`ModelRequest`]/[`ModelDecision`],
//!   [`ToolRequest`]/[`ToolDecision`], [`ToolOutcome`].
//! - `tools`: [`Tools`] (registration, schema generation, argument parsing), [`Output`],
//!   [`ToolError`] and [`ToolResult`].
//! - `context`: [`Context`], who is calling and with which configuration.
//! - [`kv`]: durable key-value state with JSON values.
//! - [`secrets`]: secrets the operator granted.
//! - [`log`]: log lines in the run's trace.
//! - [`http`]: a small blocking HTTP client over `wasi:http`.
//!
//! Argument errors never trap: a call whose arguments do not match the struct returns
//! [`ToolError::InvalidArguments`] naming the field, which the model sees and can fix.
//! Hooks never trap on odd input either: arguments that are not JSON reach a hook as a
//! string (see [`ToolRequest::arguments`]).
//!
//! Key-value writes made in a tool call or a hook are buffered by the host and committed
//! with the run's journal step; a call that traps or times out commits nothing.

mod capability;
mod context;
mod hooks;
pub mod http;
pub mod kv;
pub mod log;
pub mod secrets;
mod tools;

pub use capability::Capability;
pub use context::Context;
pub use hooks::{ModelDecision, ModelRequest, ToolDecision, ToolOutcome, ToolRequest};
pub use tools::{Output, ToolError, ToolResult, Tools};

/// Re-exported so plugins need no direct dependency on them (and get the same versions).
pub use schemars;
pub use serde;
pub use serde_json;

/// What a plugin usually needs, in one import.
///
/// ```
/// use everruns_sdk::prelude::*;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Args {
///     text: String,
/// }
/// let out: ToolResult = Ok(Output::text("hi"));
/// assert!(out.is_ok());
/// ```
pub mod prelude {
    pub use crate::schemars::JsonSchema;
    pub use crate::serde::{Deserialize, Serialize};
    pub use crate::{Capability, Context, Output, ToolError, ToolResult, Tools};
    pub use crate::{ModelDecision, ModelRequest, ToolDecision, ToolOutcome, ToolRequest};
    pub use crate::{http, kv, log, secrets};
}

/// The generated bindings of the WIT world; used by [`export_capability!`] and the
/// typed helpers. Not part of the stable API.
#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "everruns_sdk::__bindings",
    });
}

/// Implementation details of [`export_capability!`]. Not part of the stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::capability::{
        after_tool, before_model, before_tool, call_tool, info, system_prompt, tools,
    };
}

/// Exports a [`Capability`] as the plugin's implementation of the
/// `everruns:capability/capability` and `everruns:capability/hooks` interfaces. Use it once
/// per plugin crate (a `cdylib`). Hooks the capability does not implement answer with the
/// trait's defaults (continue, keep); the host calls only those the manifest lists.
///
/// `id` must equal the manifest's `id`; the version is the crate's `version` from
/// `Cargo.toml` (it must equal the manifest's `version`); `description` is optional and
/// defaults to the crate's `description`.
///
/// ```no_run
/// use everruns_sdk::prelude::*;
///
/// struct Empty;
/// impl Capability for Empty {
///     fn tools(_tools: &mut Tools) {}
/// }
///
/// everruns_sdk::export_capability!(Empty, id = "empty");
/// ```
#[macro_export]
macro_rules! export_capability {
    ($ty:ty, id = $id:expr $(,)?) => {
        $crate::export_capability!($ty, id = $id, description = env!("CARGO_PKG_DESCRIPTION"));
    };
    ($ty:ty, id = $id:expr, description = $description:expr $(,)?) => {
        const _: () = {
            struct __EverrunsExport;

            impl $crate::__bindings::exports::everruns::capability::capability::Guest
                for __EverrunsExport
            {
                fn info() -> $crate::__bindings::everruns::capability::types::CapabilityInfo {
                    $crate::__private::info($id, env!("CARGO_PKG_VERSION"), $description)
                }

                fn system_prompt(
                    ctx: $crate::__bindings::everruns::capability::types::CallContext,
                ) -> Option<String> {
                    $crate::__private::system_prompt::<$ty>(ctx)
                }

                fn tools(
                    ctx: $crate::__bindings::everruns::capability::types::CallContext,
                ) -> Vec<$crate::__bindings::everruns::capability::types::ToolSpec> {
                    $crate::__private::tools::<$ty>(ctx)
                }

                fn call_tool(
                    ctx: $crate::__bindings::everruns::capability::types::CallContext,
                    call: $crate::__bindings::everruns::capability::types::ToolCall,
                ) -> Result<
                    $crate::__bindings::everruns::capability::types::ToolOutput,
                    $crate::__bindings::everruns::capability::types::ToolError,
                > {
                    $crate::__private::call_tool::<$ty>(ctx, call)
                }
            }

            impl $crate::__bindings::exports::everruns::capability::hooks::Guest
                for __EverrunsExport
            {
                fn before_model(
                    ctx: $crate::__bindings::everruns::capability::types::CallContext,
                    request: $crate::__bindings::exports::everruns::capability::hooks::ModelRequest,
                ) -> $crate::__bindings::exports::everruns::capability::hooks::ModelDecision {
                    $crate::__private::before_model::<$ty>(ctx, request)
                }

                fn before_tool(
                    ctx: $crate::__bindings::everruns::capability::types::CallContext,
                    call: $crate::__bindings::exports::everruns::capability::hooks::ToolRequest,
                ) -> $crate::__bindings::exports::everruns::capability::hooks::ToolDecision {
                    $crate::__private::before_tool::<$ty>(ctx, call)
                }

                fn after_tool(
                    ctx: $crate::__bindings::everruns::capability::types::CallContext,
                    call: $crate::__bindings::exports::everruns::capability::hooks::ToolRequest,
                    result: $crate::__bindings::exports::everruns::capability::hooks::ToolResult,
                ) -> Option<$crate::__bindings::exports::everruns::capability::hooks::ToolResult>
                {
                    $crate::__private::after_tool::<$ty>(ctx, call, result)
                }
            }

    $crate::__bindings::__export_world!(__EverrunsExport with_types_in $crate::__bindings);
        };
    };
}
