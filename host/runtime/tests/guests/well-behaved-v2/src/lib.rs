//! Version 0.2.0 of the well-behaved test plugin (same code, new version), for hot reload.
include!("../../well-behaved/src/plugin.rs");
