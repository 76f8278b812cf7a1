//! Log lines recorded with the tool step in the run's trace (and mirrored to the
//! server's logs). The host caps their number and length per call.
//!
//! ```no_run
//! everruns_sdk::log::info("fetched 3 items");
//! ```

use crate::__bindings::everruns::capability::log as wit;

/// Very detailed diagnostics.
///
/// ```no_run
/// everruns_sdk::log::trace("entering parse");
/// ```
pub fn trace(message: &str) {
    wit::log(wit::Level::Trace, message);
}

/// Diagnostics.
///
/// ```no_run
/// everruns_sdk::log::debug("cache miss");
/// ```
pub fn debug(message: &str) {
    wit::log(wit::Level::Debug, message);
}

/// Normal progress.
///
/// ```no_run
/// everruns_sdk::log::info("saved");
/// ```
pub fn info(message: &str) {
    wit::log(wit::Level::Info, message);
}

/// Something unexpected the plugin recovered from.
///
/// ```no_run
/// everruns_sdk::log::warn("retrying once");
/// ```
pub fn warn(message: &str) {
    wit::log(wit::Level::Warn, message);
}

/// Something failed.
///
/// ```no_run
/// everruns_sdk::log::error("upstream returned 500");
/// ```
pub fn error(message: &str) {
    wit::log(wit::Level::Error, message);
}
