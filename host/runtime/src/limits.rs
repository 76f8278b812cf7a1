//! Per-call resource limits: the memory limiter, the typed errors limits raise inside
//! wasmtime, and the mapping from a wasmtime error to a typed [`crate::Error`].

use std::time::Instant;

use wasmtime::{ResourceLimiter, Trap, UpdateDeadline};

use crate::error::Error;

/// Raised (as a trap) by the epoch callback when the call's wall-clock budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("call deadline exceeded")]
pub(crate) struct DeadlineExceeded;

/// Raised (as a trap) when linear memory would grow past the plugin's limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded")]
pub(crate) struct MemoryLimitExceeded;

/// Caps linear memory per store; tables get a generous fixed cap.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    pub(crate) max_bytes: usize,
    pub(crate) hit: bool,
}

/// Table elements one instance may have (Rust guests use a few hundred).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Err(wasmtime::Error::new(MemoryLimitExceeded));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The epoch callback: yield to the executor every tick until `deadline`, then trap.
pub(crate) fn deadline_callback(
    deadline: Instant,
) -> impl FnMut() -> wasmtime::Result<UpdateDeadline> + Send + Sync + 'static {
    move || {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    }
}

/// Turns an error from instantiating or calling a plugin into a typed error.
pub(crate) fn classify(err: wasmtime::Error, timeout_ms: u64, memory_limit_mib: u64) -> Error {
    if err.is::<DeadlineExceeded>() {
        return Error::Timeout(timeout_ms);
    }
    if err.is::<MemoryLimitExceeded>() {
        return Error::MemoryLimit {
            limit_mib: memory_limit_mib,
        };
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        match trap {
            Trap::StackOverflow => return Error::StackOverflow,
            Trap::OutOfFuel => return Error::FuelExhausted,
            Trap::Interrupt => return Error::Timeout(timeout_ms),
            _ => {}
        }
    }
    Error::Trap(crate::error::chain(&err))
}
