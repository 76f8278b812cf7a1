//! Cursor pagination over id-ordered rows: each backend fetches `limit + 1` rows after the
//! cursor, and the extra row, if present, proves there is a next page.

use everruns_core::{MAX_PAGE_LIMIT, Page, PageRequest};

/// The page size to use, whatever the caller put in the (public) field.
pub(crate) fn limit(page: &PageRequest) -> u32 {
    page.limit.clamp(1, MAX_PAGE_LIMIT)
}

/// How many rows to fetch: one more than the page holds.
pub(crate) fn fetch_limit(page: &PageRequest) -> i64 {
    i64::from(limit(page)) + 1
}

/// Builds the page from rows fetched with [`fetch_limit`]; `cursor` gives an item's id.
pub(crate) fn finish<T>(
    page: &PageRequest,
    mut rows: Vec<T>,
    total: i64,
    cursor: impl Fn(&T) -> String,
) -> Page<T> {
    let limit = limit(page) as usize;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor)
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
        // COUNT(*) is never negative.
        total: u64::try_from(total).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_row_yields_a_cursor_to_the_last_item_kept() {
        let req = PageRequest::first(2);
        let page = finish(&req, vec![1, 2, 3], 9, |n| n.to_string());
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        assert_eq!(page.total, 9);
        let last = finish(&req, vec![7, 8], 9, |n| n.to_string());
        assert_eq!(last.next_cursor, None);
    }
}
