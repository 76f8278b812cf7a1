//! The well-behaved test plugin: info, a prompt fragment, tools with schemas, and calls
//! that use the config, the idempotency key, logging and a KV counter.
include!("plugin.rs");
