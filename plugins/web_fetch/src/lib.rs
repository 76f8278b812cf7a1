//! The `web_fetch` built-in capability: fetches a URL and returns readable text (HTML
//! reduced to markdown-ish text; plain text and JSON as they are), capped in size.
//! Redirects are followed by the plugin, up to 5 hops, and every hop passes the host's
//! checks again: only granted destinations and only public addresses (unless the operator
//! allows private networks).

mod html;

use std::time::Duration;

use everruns_sdk::http::{HttpError, Request, Url};
use everruns_sdk::prelude::*;

const MAX_REDIRECTS: usize = 5;
const MAX_DOWNLOAD_BYTES: usize = 2 * 1024 * 1024;
const DEFAULT_MAX_CHARS: u32 = 20_000;
const MAX_CHARS: u32 = 100_000;

/// Arguments of `fetch`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FetchArgs {
    /// Absolute `http://` or `https://` URL.
    url: String,
    /// Longest text returned, in characters (default 20000, at most 100000); longer
    /// pages are cut and marked as truncated.
    max_chars: Option<u32>,
    /// Return the HTML source instead of readable text. Default false.
    #[serde(default)]
    raw: bool,
}

fn fetch(_ctx: &Context, args: FetchArgs) -> ToolResult {
    let max_chars = args.max_chars.unwrap_or(DEFAULT_MAX_CHARS);
    if !(1..=MAX_CHARS).contains(&max_chars) {
        return Err(ToolError::invalid_argument(
            "max_chars",
            format!("must be between 1 and {MAX_CHARS}"),
        ));
    }
    let mut url = Url::parse(&args.url).map_err(|e| ToolError::invalid_argument("url", e))?;
    let mut hops = 0;
    let response = loop {
        let response = Request::get(&url.to_string())
            .map_err(|e| ToolError::invalid_argument("url", e))?
            .header("user-agent", "everruns-web-fetch/0.1")
            .header(
                "accept",
                "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.5",
            )
            .timeout(Duration::from_secs(20))
            .max_body_bytes(MAX_DOWNLOAD_BYTES)
            .send()
            .map_err(|e| match e {
                HttpError::Denied(why) if hops > 0 => {
                    ToolError::Denied(format!("redirect to {url} refused: {why}"))
                }
                HttpError::TooLarge(n) => {
                    ToolError::Failed(format!("{url}: the page is larger than {n} bytes"))
                }
                other => other.into(),
            })?;
        let location = response.header("location");
        match (response.status, location) {
            (301 | 302 | 303 | 307 | 308, Some(location)) => {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(ToolError::Failed(format!(
                        "more than {MAX_REDIRECTS} redirects"
                    )));
                }
                url = url
                    .join(location)
                    .map_err(|e| ToolError::Failed(format!("bad redirect from {url}: {e}")))?;
            }
            _ => break response,
        }
    };
    match response.status {
        200..=299 => {}
        404 | 410 => {
            return Err(ToolError::NotFound(format!(
                "{url} answered HTTP {}",
                response.status
            )));
        }
        status => return Err(ToolError::Failed(format!("{url} answered HTTP {status}"))),
    }

    let content_type = response
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = response.text();
    let is_html = content_type.contains("html")
        || (content_type.is_empty() && body.trim_start().starts_with('<'));
    let textual = is_html
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.is_empty();
    if !textual {
        return Err(ToolError::Failed(format!(
            "{url} is `{content_type}`, not a page that can be read as text"
        )));
    }
    let (title, text) = if is_html && !args.raw {
        let page = html::to_text(&body, &url);
        (page.title, page.text)
    } else {
        (None, body)
    };
    let total = text.chars().count();
    let (content, truncated) = if total > max_chars as usize {
        (
            text.chars().take(max_chars as usize).collect::<String>(),
            true,
        )
    } else {
        (text, false)
    };
    Ok(Output::json(&serde_json::json!({
        "url": url.to_string(),
        "status": response.status,
        "content_type": content_type,
        "title": title,
        "content": content,
        "truncated": truncated,
        "total_chars": total,
    })))
}

struct WebFetch;

impl Capability for WebFetch {
    fn tools(tools: &mut Tools) {
        tools.add(
            "fetch",
            "Fetches a public web page (http or https) and returns its readable text",
            fetch,
        );
    }
}

everruns_sdk::export_capability!(WebFetch, id = "web_fetch");
