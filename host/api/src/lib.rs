//! The Everruns HTTP API.
