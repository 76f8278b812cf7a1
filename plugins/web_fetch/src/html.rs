//! HTML reduced to readable markdown-ish text: headings, paragraphs, list items, links
//! (resolved against the page URL), emphasis and code; scripts, styles and other
//! non-content elements dropped; entities decoded; whitespace collapsed. A tolerant
//! single-pass scanner, not a full HTML parser: good enough for reading pages.

use everruns_sdk::http::Url;

/// The page's `<title>` and its text.
pub struct Page {
    pub title: Option<String>,
    pub text: String,
}

/// Elements whose content is never shown.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "iframe", "object", "canvas", "select",
    "button",
];

/// Elements that start a new block (a blank line around them).
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "nav",
    "aside",
    "ul",
    "ol",
    "table",
    "blockquote",
    "form",
    "figure",
    "dl",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "hr",
    "details",
    "summary",
    "address",
];

/// Elements that end a line.
const LINES: &[&str] = &["br", "tr", "li", "dt", "dd", "figcaption", "caption"];

pub fn to_text(html: &str, base: &Url) -> Page {
    let mut out = Writer::default();
    let mut title = None;
    let mut rest = html;
    // A stack of open links: (href, output position where their text starts).
    let mut links: Vec<(Option<String>, usize)> = Vec::new();
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            out.text(&decode(rest));
            break;
        };
        out.text(&decode(&rest[..lt]));
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |i| &after[i + 3..]);
            continue;
        }
        if rest.starts_with("<!") || rest.starts_with("<?") {
            rest = rest.find('>').map_or("", |i| &rest[i + 1..]);
            continue;
        }
        let Some(tag) = Tag::parse(rest) else {
            out.text("<");
            rest = &rest[1..];
            continue;
        };
        rest = &rest[tag.len..];
        let name = tag.name.as_str();
        if name == "title" && !tag.closing {
            let end = find_ci(rest, "</title").unwrap_or(rest.len());
            let t = collapse(&decode(&rest[..end]));
            if !t.is_empty() {
                title = Some(t);
            }
            rest = skip_close(&rest[end..]);
            continue;
        }
        if SKIPPED.contains(&name) && !tag.closing && !tag.self_closing {
            let end = find_ci(rest, &format!("</{name}")).unwrap_or(rest.len());
            rest = skip_close(&rest[end..]);
            continue;
        }
        match (name, tag.closing) {
            ("pre", false) => {
                out.block();
                out.raw("```\n");
                out.pre += 1;
            }
            ("pre", true) => {
                out.pre = out.pre.saturating_sub(1);
                out.raw("\n```");
                out.block();
            }
            (h, false)
                if h.len() == 2 && h.starts_with('h') && h.as_bytes()[1].is_ascii_digit() =>
            {
                out.block();
                let level = (h.as_bytes()[1] - b'0') as usize;
                out.raw(&format!("{} ", "#".repeat(level.clamp(1, 6))));
            }
            ("li", false) => {
                out.line();
                out.raw("- ");
            }
            ("hr", _) => {
                out.block();
                out.raw("---");
                out.block();
            }
            ("strong" | "b", _) => out.raw("**"),
            ("em" | "i", _) => out.raw("_"),
            ("code", _) if out.pre == 0 => out.raw("`"),
            ("img", _) => {
                if let Some(alt) = tag.attr("alt").filter(|a| !a.trim().is_empty()) {
                    out.text(&format!("[image: {}]", alt.trim()));
                }
            }
            ("a", false) => {
                let href = tag
                    .attr("href")
                    .filter(|h| !h.starts_with('#') && !h.starts_with("javascript:"))
                    .and_then(|h| base.join(&h).ok())
                    .map(|u| u.to_string());
                out.raw("");
                links.push((href, out.buf.len()));
            }
            ("a", true) => {
                if let Some((Some(href), start)) = links.pop() {
                    let text = out.buf[start.min(out.buf.len())..].trim().to_owned();
                    if !text.is_empty() && text != href {
                        out.buf.truncate(start);
                        out.raw(&format!("[{text}]({href})"));
                    }
                }
            }
            (n, _) if BLOCKS.contains(&n) => out.block(),
            (n, _) if LINES.contains(&n) => out.line(),
            ("td" | "th", false) => out.raw(" | "),
            _ => {}
        }
    }
    Page {
        title,
        text: out.finish(),
    }
}

/// A start or end tag.
struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    attrs: Vec<(String, String)>,
    /// Bytes consumed, including `<` and `>`.
    len: usize,
}

impl Tag {
    fn parse(s: &str) -> Option<Tag> {
        let bytes = s.as_bytes();
        let mut i = 1;
        let closing = bytes.get(1) == Some(&b'/');
        if closing {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-') {
            i += 1;
        }
        if i == name_start || !bytes[name_start].is_ascii_alphabetic() {
            return None;
        }
        let name = s[name_start..i].to_ascii_lowercase();
        let mut attrs = Vec::new();
        let mut self_closing = false;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes.get(i) {
                None => return None,
                Some(b'>') => {
                    i += 1;
                    break;
                }
                Some(b'/') => {
                    self_closing = true;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let key_start = i;
            while i < bytes.len()
                && !matches!(bytes[i], b'=' | b'>' | b'/')
                && !bytes[i].is_ascii_whitespace()
            {
                i += 1;
            }
            let key = s[key_start..i].to_ascii_lowercase();
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value = String::new();
            if bytes.get(i) == Some(&b'=') {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(&q @ (b'"' | b'\'')) => {
                        let end = s[i + 1..]
                            .find(q as char)
                            .map_or(bytes.len(), |e| i + 1 + e);
                        value = decode(&s[i + 1..end]);
                        i = (end + 1).min(bytes.len());
                    }
                    _ => {
                        let start = i;
                        while i < bytes.len() && bytes[i] != b'>' && !bytes[i].is_ascii_whitespace()
                        {
                            i += 1;
                        }
                        value = decode(&s[start..i]);
                    }
                }
            }
            if key.is_empty() {
                i += 1;
            } else {
                attrs.push((key, value));
            }
        }
        Some(Tag {
            name,
            closing,
            self_closing,
            attrs,
            len: i,
        })
    }

    fn attr(&self, name: &str) -> Option<String> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Output with whitespace handling: collapsed outside `<pre>`, blank lines between
/// blocks, at most one blank line in a row.
#[derive(Default)]
struct Writer {
    buf: String,
    pre: usize,
}

impl Writer {
    fn text(&mut self, text: &str) {
        if self.pre > 0 {
            self.buf.push_str(text);
            return;
        }
        for (i, word) in text.split_whitespace().enumerate() {
            let starts_with_space = i > 0 || text.starts_with(char::is_whitespace);
            if starts_with_space && !self.buf.ends_with([' ', '\n']) && !self.buf.is_empty() {
                self.buf.push(' ');
            }
            self.buf.push_str(word);
        }
        if text.ends_with(char::is_whitespace) && !text.trim().is_empty() {
            self.buf.push(' ');
        }
    }

    fn raw(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    fn line(&mut self) {
        self.trim_end_spaces();
        if !self.buf.is_empty() && !self.buf.ends_with('\n') {
            self.buf.push('\n');
        }
    }

    fn block(&mut self) {
        self.trim_end_spaces();
        if self.buf.is_empty() {
            return;
        }
        while !self.buf.ends_with("\n\n") {
            self.buf.push('\n');
        }
    }

    fn trim_end_spaces(&mut self) {
        while self.buf.ends_with(' ') {
            self.buf.pop();
        }
    }

    fn finish(self) -> String {
        let mut out = String::with_capacity(self.buf.len());
        let mut blank = 0;
        for line in self.buf.lines() {
            let line = line.trim_end();
            if line.trim().is_empty() {
                blank += 1;
                if blank > 1 {
                    continue;
                }
            } else {
                blank = 0;
            }
            out.push_str(line);
            out.push('\n');
        }
        out.trim().to_owned()
    }
}

fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    let hay = haystack.as_bytes();
    let needle = needle.as_bytes();
    (0..hay.len().saturating_sub(needle.len() - 1))
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// Skips a closing tag at the start of `s` (`</name ...>`).
fn skip_close(s: &str) -> &str {
    match s.find('>') {
        Some(i) if s.starts_with("</") => &s[i + 1..],
        _ => s,
    }
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes character references (`&amp;`, `&#39;`, `&#x27;` and common named ones).
pub fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let entity = &rest[1..end];
        let decoded = if let Some(num) = entity.strip_prefix('#') {
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse().ok(),
            };
            code.and_then(char::from_u32).map(String::from)
        } else {
            named(entity).map(String::from)
        };
        match decoded {
            Some(text) => {
                out.push_str(&text);
                rest = &rest[end..];
                if rest.starts_with(';') {
                    rest = &rest[1..];
                }
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn named(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        "nbsp" => " ",
        "ndash" => "–",
        "mdash" => "—",
        "hellip" => "…",
        "copy" => "©",
        "reg" => "®",
        "trade" => "™",
        "laquo" => "«",
        "raquo" => "»",
        "lsquo" => "‘",
        "rsquo" => "’",
        "ldquo" => "“",
        "rdquo" => "”",
        "bull" => "•",
        "middot" => "·",
        "euro" => "€",
        "deg" => "°",
        "times" => "×",
        _ => return None,
    })
}
