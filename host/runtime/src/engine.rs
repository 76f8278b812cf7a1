//! The one place that configures wasmtime: the `Engine` (async, epoch interruption,
//! pooling allocator, optional fuel) and the epoch ticker thread that drives deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};

/// How often the epoch advances; the granularity of call deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core wasm instances one component may need. Counted in the SDK examples: a Rust
/// wasip2 guest uses 3, a componentize-qjs (JavaScript) one 8, a componentize-py 0.25 one
/// 14 (CPython and its shared libraries are separate modules); size for the largest.
const CORE_INSTANCES_PER_COMPONENT: u32 = 20;
/// Linear memories one component may need (Rust and Python guests: 1, JavaScript: 2).
/// The Python guest's is large (13 MiB initially) but that is bounded by the memory
/// limit, not by the pool's slot count.
const MEMORIES_PER_COMPONENT: u32 = 4;
/// Tables one component may need.
const TABLES_PER_COMPONENT: u32 = 20;
/// Guard region after each linear memory. Small, because the reservation already equals
/// the memory cap and bounds checks are explicit either way.
const MEMORY_GUARD: u64 = 2 * 1024 * 1024;
/// Bytes of a linear memory's dirty pages reset with `memset` when its slot is freed (found
/// with Linux's `PAGEMAP_SCAN`), instead of `madvise` and a page fault per page on the next
/// call. A Rust guest's call dirties far less than this (the top of its stack, data, heap).
const MEMORY_KEEP_RESIDENT: usize = 1024 * 1024;
/// The same for tables.
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;

/// Builds the engine. Every setting that affects compiled code lives here, because it
/// also feeds `Engine::precompile_compatibility_hash` and so the compile-cache key.
pub(crate) fn build(config: &RuntimeConfig) -> Result<Engine> {
    if config.max_concurrent_calls == 0 {
        return Err(Error::Engine(
            "max_concurrent_calls must be at least 1".into(),
        ));
    }
    if config.max_memory_mib == 0 || config.max_memory_mib > 4096 {
        return Err(Error::Engine("max_memory_mib must be in 1..=4096".into()));
    }
    let slots = config.max_concurrent_calls;
    let max_memory = config.max_memory_mib * 1024 * 1024;

    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(max_memory as usize);
    // Without PAGEMAP_SCAN (Linux < 6.7), keeping memory resident would `memset` the lowest
    // bytes whether dirty or not: worse than `madvise` for guests that touch little.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }

    let mut wasm = Config::new();
    wasm.epoch_interruption(true)
        .consume_fuel(config.fuel)
        // Component-model async would cost ~10 µs per call and no guest needs it.
        .concurrency_support(false)
        .wasm_component_model(true)
        .memory_reservation(max_memory)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(0)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

    Engine::new(&wasm).map_err(|e| Error::Engine(crate::error::chain(&e)))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a dedicated thread (not a tokio
/// task, so a busy runtime cannot starve deadlines). Stops when dropped.
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(crate) fn start(engine: &Engine) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("everruns-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Engine(format!("cannot start epoch ticker: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and increments; it cannot panic, and joining waits at
            // most one tick.
            let _ = thread.join();
        }
    }
}
