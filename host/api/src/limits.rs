//! What one API key, and the whole process, may consume: request and run-start rate limits
//! (token buckets per key, from `governor`), caps on concurrent event streams (per key and per
//! process), and the deadline of every request. Limits hold per process: several processes
//! behind one load balancer each enforce them on the requests they receive.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use everruns_core::ApiKeyId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// The bounds, as configured (`0` turns a bound off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests per second per API key; bursts of twice that are allowed.
    pub rate_limit_per_key: u32,
    /// Runs started per second per API key; bursts of twice that are allowed.
    pub run_start_limit_per_key: u32,
    /// Event streams one API key may hold open at once.
    pub max_streams_per_key: u32,
    /// Event streams the process holds open at once, over all keys.
    pub max_streams: u32,
    /// How long a request may take to produce its response, in milliseconds (an event
    /// stream's response is its headers: the stream itself may last).
    pub request_timeout_ms: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            rate_limit_per_key: 100,
            run_start_limit_per_key: 10,
            max_streams_per_key: 500,
            max_streams: 5_000,
            request_timeout_ms: 30_000,
        }
    }
}

impl LimitSettings {
    /// Every bound off (for benchmarks that measure the server, not its limits).
    pub fn unlimited() -> Self {
        Self {
            rate_limit_per_key: 0,
            run_start_limit_per_key: 0,
            max_streams_per_key: 0,
            max_streams: 0,
            request_timeout_ms: 0,
        }
    }
}

/// The limits of one process and what has been used of them.
#[derive(Debug)]
pub struct Limits {
    settings: LimitSettings,
    requests: Option<DefaultKeyedRateLimiter<ApiKeyId>>,
    run_starts: Option<DefaultKeyedRateLimiter<ApiKeyId>>,
    clock: DefaultClock,
    streams: Arc<Streams>,
}

/// Open event streams, per key and in all.
#[derive(Debug, Default)]
struct Streams {
    total: AtomicU32,
    per_key: Mutex<HashMap<ApiKeyId, u32>>,
}

/// One open event stream, counted until it is dropped.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    streams: Arc<Streams>,
    key: ApiKeyId,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.streams.total.fetch_sub(1, Ordering::Relaxed);
        let mut per_key = self
            .streams
            .per_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = per_key.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

/// A token bucket refilling `per_second` cells a second, holding twice that.
fn bucket(per_second: u32) -> Option<DefaultKeyedRateLimiter<ApiKeyId>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// Whole seconds to wait (at least 1), for `Retry-After`.
fn retry_after(wait: Duration) -> u32 {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

impl Limits {
    /// Limits enforcing `settings`.
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            requests: bucket(settings.rate_limit_per_key),
            run_starts: bucket(settings.run_start_limit_per_key),
            clock: DefaultClock::default(),
            streams: Arc::default(),
        }
    }

    /// The configured bounds.
    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    /// The request deadline, if there is one.
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        (self.settings.request_timeout_ms > 0)
            .then(|| Duration::from_millis(self.settings.request_timeout_ms))
    }

    fn take(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<ApiKeyId>>,
        key: &ApiKeyId,
        what: &str,
        per_second: u32,
    ) -> Result<(), ApiError> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = retry_after(not_until.wait_time_from(self.clock.now()));
            ApiError::too_many_requests(
                format!(
                    "this API key made more than {per_second} {what} per second (bursts up to \
                     {}); retry in {wait} s",
                    per_second.saturating_mul(2)
                ),
                wait,
            )
        })
    }

    /// Counts one request of `key`; 429 when its bucket is empty.
    pub(crate) fn request(&self, key: &ApiKeyId) -> Result<(), ApiError> {
        self.take(
            self.requests.as_ref(),
            key,
            "requests",
            self.settings.rate_limit_per_key,
        )
    }

    /// Counts one run started by `key`; 429 when its bucket is empty.
    pub(crate) fn run_start(&self, key: &ApiKeyId) -> Result<(), ApiError> {
        self.take(
            self.run_starts.as_ref(),
            key,
            "run starts",
            self.settings.run_start_limit_per_key,
        )
    }

    /// Opens an event stream for `key`: 429 when the key holds its maximum, 503 when the
    /// process does; otherwise a permit that counts the stream until dropped.
    pub(crate) fn open_stream(&self, key: &ApiKeyId) -> Result<StreamPermit, ApiError> {
        let LimitSettings {
            max_streams,
            max_streams_per_key,
            ..
        } = self.settings;
        let mut per_key = self
            .streams
            .per_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = per_key.get(key).copied().unwrap_or(0);
        if max_streams_per_key > 0 && held >= max_streams_per_key {
            return Err(ApiError::too_many_requests(
                format!(
                    "this API key holds {held} open event streams, the most it may (\
                     max_streams_per_key); close one or retry later"
                ),
                STREAM_RETRY_AFTER_S,
            ));
        }
        let total = self.streams.total.fetch_add(1, Ordering::Relaxed);
        if max_streams > 0 && total >= max_streams {
            self.streams.total.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::unavailable_for(
                format!(
                    "the server holds {total} open event streams, the most it may (max_streams); \
                     retry later"
                ),
                STREAM_RETRY_AFTER_S,
            ));
        }
        *per_key.entry(key.clone()).or_insert(0) += 1;
        Ok(StreamPermit {
            streams: self.streams.clone(),
            key: key.clone(),
        })
    }
}

/// `Retry-After` of a refused event stream, in seconds.
const STREAM_RETRY_AFTER_S: u32 = 5;

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn a_key_gets_twice_its_rate_as_a_burst_then_429_with_a_wait() {
        let limits = Limits::new(LimitSettings {
            rate_limit_per_key: 2,
            ..LimitSettings::unlimited()
        });
        let (a, b) = (ApiKeyId::new(), ApiKeyId::new());
        for _ in 0..4 {
            limits.request(&a).unwrap();
        }
        let refused = limits.request(&a).unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after(), Some(1));
        limits.request(&b).expect("another key has its own bucket");
        limits.run_start(&a).expect("run starts are off");
    }

    #[test]
    fn streams_are_capped_per_key_and_per_process_and_released_on_drop() {
        let limits = Limits::new(LimitSettings {
            max_streams_per_key: 2,
            max_streams: 3,
            ..LimitSettings::unlimited()
        });
        let (a, b) = (ApiKeyId::new(), ApiKeyId::new());
        let first = limits.open_stream(&a).unwrap();
        let _second = limits.open_stream(&a).unwrap();
        let per_key = limits.open_stream(&a).unwrap_err();
        assert_eq!(per_key.status(), StatusCode::TOO_MANY_REQUESTS);
        let _third = limits.open_stream(&b).unwrap();
        let process = limits.open_stream(&b).unwrap_err();
        assert_eq!(process.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(process.retry_after(), Some(STREAM_RETRY_AFTER_S));
        drop(first);
        limits
            .open_stream(&a)
            .expect("a closed stream frees its place");
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::from_secs(2)), 2);
        assert_eq!(retry_after(Duration::from_millis(2001)), 3);
    }
}
