//! The demo model behind `everruns dev fake-llm`: a deterministic stand-in that lets a newcomer
//! watch a whole run (streamed text, a tool call, its result) without an API key.
//!
//! - A message that names one of the offered tools (its full `<capability>__<tool>` name or
//!   the part after `__`, as a whole word) calls it, with the first JSON object that follows
//!   the name as its arguments (`{}` without one).
//! - When the conversation ends with tool results, it reports them.
//! - Anything else is echoed, with a line saying which tools could be called.

use serde_json::{Map, Value};

use crate::{RecordedRequest, Reply, WireFormat};

/// Tool output longer than this is cut in the demo's report.
const MAX_REPORTED: usize = 400;

/// The demo model's answer to `request`.
pub fn demo_reply(request: &RecordedRequest) -> Reply {
    let results = trailing_tool_results(request);
    if !results.is_empty() {
        let lines: Vec<String> = results
            .iter()
            .map(|content| format!("- {}", shorten(content)))
            .collect();
        return Reply::text(format!(
            "The tool call returned:\n{}\n(This is `everruns dev fake-llm`, a scripted stand-in \
             for a model.)",
            lines.join("\n")
        ));
    }
    let said = last_user_text(request);
    let tools = request.tool_names();
    if let Some((name, arguments)) = named_tool(&said, &tools) {
        return Reply::text(format!("Calling `{name}`.")).and_tool_call(name, arguments);
    }
    let offer = if tools.is_empty() {
        "The agent has no tools; give it a capability to see tool calls.".to_owned()
    } else {
        format!(
            "Name one of the agent's tools to call it: {}.",
            tools
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Reply::text(format!(
        "You said: \"{}\". This is `everruns dev fake-llm`, a scripted stand-in for a model. {offer}",
        shorten(&said)
    ))
}

/// The first offered tool `text` names as a whole word, with the JSON object after the name.
fn named_tool(text: &str, tools: &[String]) -> Option<(String, Value)> {
    let words = word_spans(text);
    let mut best: Option<(usize, &String)> = None;
    for tool in tools {
        let short = tool.rsplit_once("__").map_or(tool.as_str(), |(_, t)| t);
        let found = words
            .iter()
            .find(|(_, word)| word.eq_ignore_ascii_case(tool) || word.eq_ignore_ascii_case(short));
        if let Some(&(end, _)) = found
            && best.is_none_or(|(at, _)| end < at)
        {
            best = Some((end, tool));
        }
    }
    let (end, tool) = best?;
    let arguments = text[end..]
        .find('{')
        .and_then(|brace| {
            serde_json::Deserializer::from_str(&text[end + brace..])
                .into_iter::<Value>()
                .next()
                .and_then(Result::ok)
        })
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Map::new()));
    Some((tool.clone(), arguments))
}

/// The words of `text` (runs of letters, digits, `_` and `-`, the characters of tool names),
/// each with the byte offset it ends at.
fn word_spans(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        let in_word = c.is_alphanumeric() || c == '_' || c == '-';
        match (start, in_word) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push((i, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// The text of the conversation's last user message (text parts joined), in either format.
fn last_user_text(request: &RecordedRequest) -> String {
    let Some(message) = request
        .messages()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
    else {
        return String::new();
    };
    text_of(&message["content"])
}

/// A message content: a string, or the text of its `text` parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The contents of the tool results the conversation ends with (the model's last tool calls).
fn trailing_tool_results(request: &RecordedRequest) -> Vec<String> {
    let messages = request.messages();
    match request.wire {
        WireFormat::OpenAi => {
            let mut results: Vec<String> = messages
                .iter()
                .rev()
                .take_while(|m| m["role"] == "tool")
                .map(|m| text_of(&m["content"]))
                .collect();
            results.reverse();
            results
        }
        WireFormat::Anthropic => messages
            .last()
            .filter(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_array())
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| text_of(&b["content"]))
            .collect(),
    }
}

/// `text` cut to [`MAX_REPORTED`] bytes (on a character boundary), marked when cut.
fn shorten(text: &str) -> String {
    if text.len() <= MAX_REPORTED {
        return text.to_owned();
    }
    format!("{}…", &text[..text.floor_char_boundary(MAX_REPORTED)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<String> {
        vec!["current_time__now".to_owned(), "kv__put".to_owned()]
    }

    #[test]
    fn a_named_tool_is_called_with_the_object_after_its_name() {
        assert_eq!(
            named_tool("what time is it now?", &tools()),
            Some(("current_time__now".to_owned(), Value::Object(Map::new())))
        );
        assert_eq!(
            named_tool(
                r#"please kv__put {"key": "a", "value": 1} thanks"#,
                &tools()
            ),
            Some((
                "kv__put".to_owned(),
                serde_json::json!({"key": "a", "value": 1})
            ))
        );
        // The earliest named tool wins; a name inside a longer word does not count.
        assert_eq!(
            named_tool("PUT it, then now", &tools()).map(|(n, _)| n),
            Some("kv__put".to_owned())
        );
        assert_eq!(named_tool("nowhere to output", &tools()), None);
        let hyphenated = vec!["web__fetch-page".to_owned()];
        assert_eq!(
            named_tool("fetch-page it", &hyphenated).map(|(n, _)| n),
            Some("web__fetch-page".to_owned())
        );
        // Text after the name that is not an object leaves the arguments empty.
        assert_eq!(
            named_tool("now [1, 2]", &tools()).map(|(_, a)| a),
            Some(Value::Object(Map::new()))
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_REPORTED);
        let cut = shorten(&text);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= MAX_REPORTED + '…'.len_utf8());
        assert_eq!(shorten("short"), "short");
    }
}
