//! A small blocking HTTP client over `wasi:http/outgoing-handler`. The host allows a
//! request only to the `scheme://host[:port]` destinations the plugin was granted
//! (`permissions.allowed_hosts`) and only to public addresses; otherwise the call returns
//! [`HttpError::Denied`]. Redirects are not followed: a 3xx is returned as it is, so the
//! plugin decides (each hop is checked by the host again).
//!
//! ```no_run
//! use everruns_sdk::http;
//!
//! let response = http::get("https://api.example.com/v1/items?limit=5")?;
//! if response.status == 200 {
//!     let items: serde_json::Value = response.json()?;
//! }
//! # Ok::<(), http::HttpError>(())
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

use crate::tools::ToolError;

/// Largest response body read by default: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Why a request failed.
///
/// ```
/// use everruns_sdk::{ToolError, http::HttpError};
///
/// let e: ToolError = HttpError::Denied("host not allowed".into()).into();
/// assert!(matches!(e, ToolError::Denied(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is not `http(s)://host[:port][/path][?query]`.
    InvalidUrl(String),
    /// The host refused: the destination is not allowed or resolves to a private address.
    Denied(String),
    /// The response body is larger than the limit (in bytes).
    TooLarge(usize),
    /// Anything else: DNS, connection, TLS, timeout, protocol.
    Failed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            Self::Denied(m) => write!(f, "request refused: {m}"),
            Self::TooLarge(n) => write!(f, "response body larger than {n} bytes"),
            Self::Failed(m) => write!(f, "request failed: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ToolError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::InvalidUrl(_) => ToolError::InvalidArguments(e.to_string()),
            HttpError::Denied(_) => ToolError::Denied(e.to_string()),
            HttpError::TooLarge(_) | HttpError::Failed(_) => ToolError::Failed(e.to_string()),
        }
    }
}

/// An absolute `http`/`https` URL, split into the parts `wasi:http` needs. The fragment
/// is dropped (it is never sent).
///
/// ```
/// use everruns_sdk::http::Url;
///
/// let url = Url::parse("https://Example.com:8443/a/b?q=1#top").unwrap();
/// assert_eq!(url.host(), "example.com");
/// assert_eq!(url.port(), 8443);
/// assert_eq!(url.path_and_query(), "/a/b?q=1");
/// assert_eq!(url.to_string(), "https://example.com:8443/a/b?q=1");
/// assert_eq!(url.join("../c").unwrap().to_string(), "https://example.com:8443/c");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    https: bool,
    host: String,
    port: Option<u16>,
    path_and_query: String,
}

impl Url {
    /// Parses an absolute URL.
    ///
    /// ```
    /// assert!(everruns_sdk::http::Url::parse("ftp://example.com").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let invalid = |why: &str| HttpError::InvalidUrl(format!("`{url}`: {why}"));
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected http:// or https://"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(invalid("only http and https are supported")),
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(invalid("user info is not supported"));
        }
        let (host, port) = if authority.starts_with('[') {
            let end = authority
                .find(']')
                .ok_or_else(|| invalid("unterminated IPv6 literal"))?;
            let (host, after) = authority.split_at(end + 1);
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(invalid("junk after the IPv6 literal")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| invalid("invalid port"))?),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(invalid("missing or invalid host"));
        }
        let path_and_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if path_and_query.contains(char::is_whitespace) {
            return Err(invalid("spaces must be percent-encoded"));
        }
        Ok(Self {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path_and_query,
        })
    }

    /// Resolves `reference` (absolute, scheme-relative, absolute-path or relative, as in
    /// a `Location` header) against this URL.
    ///
    /// ```
    /// let base = everruns_sdk::http::Url::parse("http://a.example/x/y").unwrap();
    /// assert_eq!(base.join("/z").unwrap().to_string(), "http://a.example/z");
    /// assert_eq!(base.join("z?k=v").unwrap().to_string(), "http://a.example/x/z?k=v");
    /// assert_eq!(base.join("//b.example/").unwrap().to_string(), "http://b.example/");
    /// ```
    pub fn join(&self, reference: &str) -> Result<Self, HttpError> {
        let reference = reference.trim();
        if reference.contains("://") {
            return Self::parse(reference);
        }
        let scheme = if self.https { "https" } else { "http" };
        if let Some(rest) = reference.strip_prefix("//") {
            return Self::parse(&format!("{scheme}://{rest}"));
        }
        let path = if reference.starts_with('/') {
            reference.to_owned()
        } else if reference.starts_with('?') {
            let base = self.path_and_query.split('?').next().unwrap_or("/");
            format!("{base}{reference}")
        } else {
            let base = self.path_and_query.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{reference}")
        };
        Self::parse(&format!(
            "{scheme}://{}{}",
            self.authority(),
            normalize(&path)
        ))
    }

    /// Whether the scheme is `https`.
    ///
    /// ```
    /// assert!(everruns_sdk::http::Url::parse("https://a.example").unwrap().is_https());
    /// ```
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host, lowercase (IPv6 literals keep their brackets).
    ///
    /// ```
    /// assert_eq!(everruns_sdk::http::Url::parse("http://[::1]:80/").unwrap().host(), "[::1]");
    /// ```
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, explicit or the scheme's default.
    ///
    /// ```
    /// assert_eq!(everruns_sdk::http::Url::parse("https://a.example").unwrap().port(), 443);
    /// ```
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }

    /// `host[:port]` as sent (the port only when explicit).
    ///
    /// ```
    /// let url = everruns_sdk::http::Url::parse("http://a.example:8080/x").unwrap();
    /// assert_eq!(url.authority(), "a.example:8080");
    /// ```
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// The path and query, starting with `/`.
    ///
    /// ```
    /// let url = everruns_sdk::http::Url::parse("http://a.example?q").unwrap();
    /// assert_eq!(url.path_and_query(), "/?q");
    /// ```
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

/// Removes `.` and `..` segments from an absolute path (keeping the query).
fn normalize(path: &str) -> String {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if let Some(q) = query {
        result.push('?');
        result.push_str(q);
    }
    result
}

/// A response with its body read into memory.
///
/// ```no_run
/// let response = everruns_sdk::http::get("https://example.com/")?;
/// println!("{} {:?}", response.status, response.header("content-type"));
/// # Ok::<(), everruns_sdk::http::HttpError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    ///
    /// ```
    /// let response = everruns_sdk::http::Response {
    ///     status: 302,
    ///     headers: vec![("location".into(), "/next".into())],
    ///     body: Vec::new(),
    /// };
    /// assert_eq!(response.header("Location"), Some("/next"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    ///
    /// ```
    /// let response = everruns_sdk::http::Response { status: 200, headers: vec![], body: b"ok".to_vec() };
    /// assert_eq!(response.text(), "ok");
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// ```
    /// let response = everruns_sdk::http::Response { status: 200, headers: vec![], body: b"[1,2]".to_vec() };
    /// let v: Vec<u32> = response.json().unwrap();
    /// assert_eq!(v, [1, 2]);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::Failed(format!("response is not the expected JSON: {e}")))
    }
}

/// A request being built.
///
/// ```no_run
/// use everruns_sdk::http::Request;
/// use std::time::Duration;
///
/// let response = Request::post("https://api.example.com/v1/notes")?
///     .header("content-type", "application/json")
///     .body(br#"{"text":"hi"}"#.to_vec())
///     .timeout(Duration::from_secs(5))
///     .send()?;
/// # Ok::<(), everruns_sdk::http::HttpError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: Url,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    max_body_bytes: usize,
}

impl Request {
    /// A request with any method (`GET`, `POST`, `PUT`, `DELETE`, `PATCH`, `HEAD`, ...).
    ///
    /// ```
    /// let request = everruns_sdk::http::Request::new("PATCH", "https://a.example/x").unwrap();
    /// ```
    pub fn new(method: &str, url: &str) -> Result<Self, HttpError> {
        Ok(Self {
            method: method.to_ascii_uppercase(),
            url: Url::parse(url)?,
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        })
    }

    /// A `GET` request.
    ///
    /// ```
    /// let request = everruns_sdk::http::Request::get("https://a.example/").unwrap();
    /// ```
    pub fn get(url: &str) -> Result<Self, HttpError> {
        Self::new("GET", url)
    }

    /// A `POST` request.
    ///
    /// ```
    /// let request = everruns_sdk::http::Request::post("https://a.example/").unwrap();
    /// ```
    pub fn post(url: &str) -> Result<Self, HttpError> {
        Self::new("POST", url)
    }

    /// Adds a header.
    ///
    /// ```
    /// let request = everruns_sdk::http::Request::get("https://a.example/")
    ///     .unwrap()
    ///     .header("accept", "text/html");
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let request = everruns_sdk::http::Request::post("https://a.example/")
    ///     .unwrap()
    ///     .body(b"payload".to_vec());
    /// ```
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Sets the connect, first-byte and between-bytes timeouts (the call's own deadline
    /// still applies).
    ///
    /// ```
    /// let request = everruns_sdk::http::Request::get("https://a.example/")
    ///     .unwrap()
    ///     .timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Reads at most `bytes` of the response body; a larger body is
    /// [`HttpError::TooLarge`]. Default [`DEFAULT_MAX_BODY_BYTES`].
    ///
    /// ```
    /// let request = everruns_sdk::http::Request::get("https://a.example/")
    ///     .unwrap()
    ///     .max_body_bytes(64 * 1024);
    /// ```
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sends the request and reads the whole response.
    ///
    /// ```no_run
    /// let response = everruns_sdk::http::Request::get("https://a.example/")?.send()?;
    /// # Ok::<(), everruns_sdk::http::HttpError>(())
    /// ```
    pub fn send(self) -> Result<Response, HttpError> {
        let fields: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        let headers = Fields::from_list(&fields)
            .map_err(|e| HttpError::InvalidUrl(format!("invalid header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        };
        let bad = |what: &str| HttpError::InvalidUrl(format!("{}: invalid {what}", self.url));
        request.set_method(&method).map_err(|()| bad("method"))?;
        let scheme = if self.url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| bad("scheme"))?;
        request
            .set_authority(Some(&self.url.authority()))
            .map_err(|()| bad("host"))?;
        request
            .set_path_with_query(Some(&self.url.path_and_query))
            .map_err(|()| bad("path"))?;
        let options = self.timeout.map(|t| {
            let options = RequestOptions::new();
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            // The host accepts any duration; the results only say "unsupported".
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });

        let body = request
            .body()
            .map_err(|()| HttpError::Failed("request body already taken".into()))?;
        let pending = outgoing_handler::handle(request, options).map_err(error_code)?;
        {
            let stream = body
                .write()
                .map_err(|()| HttpError::Failed("request body stream unavailable".into()))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::Failed(format!("writing the body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(error_code)?;

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(error_code(code)),
            Some(Err(())) | None => {
                return Err(HttpError::Failed("no response".into()));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Failed("response body already taken".into()))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| HttpError::Failed("response body stream unavailable".into()))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => {
                        if body.len() + chunk.len() > self.max_body_bytes {
                            return Err(HttpError::TooLarge(self.max_body_bytes));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(HttpError::Failed(format!(
                            "reading the body: {}",
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// `GET url` with the default limits.
///
/// ```no_run
/// let page = everruns_sdk::http::get("https://example.com/")?.text();
/// # Ok::<(), everruns_sdk::http::HttpError>(())
/// ```
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url)?.send()
}

fn error_code(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => {
            HttpError::Denied("the destination is not in this plugin's allowed hosts".into())
        }
        ErrorCode::DestinationIpProhibited => {
            HttpError::Denied("the destination resolves to a private address".into())
        }
        ErrorCode::HttpRequestUriInvalid => HttpError::InvalidUrl("rejected by the host".into()),
        ErrorCode::DnsTimeout | ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => {
            HttpError::Failed("the host name could not be resolved".into())
        }
        ErrorCode::ConnectionRefused => HttpError::Failed("connection refused".into()),
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => {
            HttpError::Failed("timed out".into())
        }
        other => HttpError::Failed(format!("{other:?}")),
    }
}
