//! The everruns binary.
fn main() {}
