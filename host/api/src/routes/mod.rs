//! One module per resource; each exposes `router()` with its documented routes.

pub(crate) mod agents;
pub(crate) mod api_keys;
pub(crate) mod approvals;
pub(crate) mod capabilities;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod messages;
pub(crate) mod monitoring;
pub(crate) mod overrides;
pub(crate) mod providers;
pub(crate) mod runs;
pub(crate) mod secrets;
pub(crate) mod sessions;
