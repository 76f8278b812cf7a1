//! Cursor pagination on the wire: `?limit=&cursor=` in, `{data, next_cursor, total}` out.

use everruns_core::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// Query parameters of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (1 to 128 characters, no control characters).
    #[param(min_length = 1, max_length = 128)]
    pub cursor: Option<String>,
}

impl PageParams {
    /// Validates the parameters into a store page request.
    pub fn to_request(&self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
        if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "invalid query parameter `limit`: must be between 1 and {MAX_PAGE_LIMIT}"
            )));
        }
        let after = match &self.cursor {
            // Cursors are ids or names, never control characters (PostgreSQL refuses NUL).
            Some(c)
                if c.chars().count() > 128 || !crate::rules::matches(crate::rules::CURSOR, c) =>
            {
                return Err(ApiError::bad_request(
                    "invalid query parameter `cursor`: use the `next_cursor` of a previous page",
                ));
            }
            other => other.clone(),
        };
        Ok(PageRequest { limit, after })
    }
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T> {
    /// The items of this page.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Number of items in the whole list.
    pub total: u64,
}

impl<T> ListResponse<T> {
    /// Converts a store page, mapping each item.
    pub fn from_page<U>(page: Page<U>, f: impl FnMut(U) -> T) -> Self {
        Self {
            data: page.items.into_iter().map(f).collect(),
            next_cursor: page.next_cursor,
            total: page.total,
        }
    }
}
