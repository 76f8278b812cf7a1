//! Cursor pagination: a list is read in id order, `limit` items at a time, resuming after the
//! last id seen.

/// Items per page when the client does not say.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// Largest page a client may ask for.
pub const MAX_PAGE_LIMIT: u32 = 200;

/// Which page to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Between 1 and [`MAX_PAGE_LIMIT`].
    pub limit: u32,
    /// Return items whose id sorts after this one; `None` starts at the beginning.
    pub after: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` items (clamped to 1..=[`MAX_PAGE_LIMIT`]).
    pub fn first(limit: u32) -> Self {
        Self {
            limit: limit.clamp(1, MAX_PAGE_LIMIT),
            after: None,
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(DEFAULT_PAGE_LIMIT)
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// How many items the whole list has (under the same filter).
    pub total: u64,
}
