//! Test support for Everruns.
