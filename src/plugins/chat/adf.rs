//! Markdown → Atlassian Document Format (Jira REST v3 comment bodies, wire-formats §5.2),
//! and ADF → plain text (inbound comment bodies that arrive as ADF).
//!
//! Supported: paragraphs (lines joined by `hardBreak`), `#`–`######` headings, fenced code
//! blocks (with language), `-`/`*` bullet and `1.` ordered lists, and inline `code`,
//! `**bold**`, `*italic*`/`_italic_` and `[text](url)` links. Anything else is kept as text.
//! ADF forbids empty text nodes, so none are produced. Pure functions.

use serde_json::{json, Value};

/// A Markdown text as an ADF `doc`.
pub fn markdown_to_adf(md: &str) -> Value {
    let mut content = Vec::new();
    let lines: Vec<&str> = md.lines().collect();
    let mut i = 0;
    let mut para: Vec<&str> = Vec::new();
    let flush = |para: &mut Vec<&str>, content: &mut Vec<Value>| {
        if !para.is_empty() {
            let mut inl = Vec::new();
            for (n, l) in para.iter().enumerate() {
                if n > 0 {
                    inl.push(json!({"type": "hardBreak"}));
                }
                inl.extend(inline(l));
            }
            if !inl.is_empty() {
                content.push(json!({"type": "paragraph", "content": inl}));
            }
            para.clear();
        }
    };
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            flush(&mut para, &mut content);
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                code.push(lines[i]);
                i += 1;
            }
            i += 1; // the closing fence (or the end)
            let mut block = json!({"type": "codeBlock", "attrs": {}});
            if !lang.trim().is_empty() {
                block["attrs"]["language"] = json!(lang.trim());
            }
            let text = code.join("\n");
            if !text.is_empty() {
                block["content"] = json!([{"type": "text", "text": text}]);
            }
            content.push(block);
            continue;
        }
        if t.is_empty() {
            flush(&mut para, &mut content);
            i += 1;
            continue;
        }
        if let Some((level, rest)) = heading(t) {
            flush(&mut para, &mut content);
            let mut h = json!({"type": "heading", "attrs": {"level": level}});
            let inl = inline(rest);
            if !inl.is_empty() {
                h["content"] = Value::Array(inl);
            }
            content.push(h);
            i += 1;
            continue;
        }
        if let Some(ordered) = list_kind(t) {
            flush(&mut para, &mut content);
            let mut items = Vec::new();
            while i < lines.len() {
                let l = lines[i].trim_start();
                match (list_kind(l), list_item_text(l)) {
                    (Some(k), Some(text)) if k == ordered => {
                        let inl = inline(text);
                        let p = if inl.is_empty() {
                            json!({"type": "paragraph"})
                        } else {
                            json!({"type": "paragraph", "content": inl})
                        };
                        items.push(json!({"type": "listItem", "content": [p]}));
                        i += 1;
                    }
                    _ => break,
                }
            }
            let kind = if ordered { "orderedList" } else { "bulletList" };
            content.push(json!({"type": kind, "content": items}));
            continue;
        }
        para.push(line.trim_end());
        i += 1;
    }
    flush(&mut para, &mut content);
    json!({"type": "doc", "version": 1, "content": content})
}

fn heading(t: &str) -> Option<(usize, &str)> {
    let level = t.chars().take_while(|&c| c == '#').count();
    if (1..=6).contains(&level) && t[level..].starts_with(' ') {
        Some((level, t[level..].trim()))
    } else {
        None
    }
}

/// `Some(false)` for a bullet item, `Some(true)` for an ordered one.
fn list_kind(t: &str) -> Option<bool> {
    if t.starts_with("- ") || t.starts_with("* ") {
        return Some(false);
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    (digits > 0 && t[digits..].starts_with(". ")).then_some(true)
}

fn list_item_text(t: &str) -> Option<&str> {
    if let Some(r) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
        return Some(r.trim());
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    t[digits..].strip_prefix(". ").map(str::trim)
}

fn text_node(text: &str, marks: &[Value]) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    let mut n = json!({"type": "text", "text": text});
    if !marks.is_empty() {
        n["marks"] = Value::Array(marks.to_vec());
    }
    Some(n)
}

/// Inline Markdown as ADF text nodes with marks.
fn inline(s: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut rest = s;
    let push_plain = |plain: &mut String, out: &mut Vec<Value>| {
        out.extend(text_node(plain, &[]));
        plain.clear();
    };
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('`') {
            if let Some(end) = after.find('`') {
                push_plain(&mut plain, &mut out);
                out.extend(text_node(&after[..end], &[json!({"type": "code"})]));
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix("**") {
            if let Some(end) = after.find("**").filter(|&e| e > 0) {
                push_plain(&mut plain, &mut out);
                out.extend(text_node(&after[..end], &[json!({"type": "strong"})]));
                rest = &after[end + 2..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix('*').or_else(|| rest.strip_prefix('_')) {
            let marker = &rest[..1];
            if let Some(end) = after
                .find(marker)
                .filter(|&e| e > 0 && !after[..e].starts_with(' '))
            {
                push_plain(&mut plain, &mut out);
                out.extend(text_node(&after[..end], &[json!({"type": "em"})]));
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix('[') {
            if let Some((label, url, used)) = link(after) {
                push_plain(&mut plain, &mut out);
                out.extend(text_node(
                    label,
                    &[json!({"type": "link", "attrs": {"href": url}})],
                ));
                rest = &after[used..];
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        plain.push(c);
        rest = &rest[c.len_utf8()..];
    }
    push_plain(&mut plain, &mut out);
    out
}

/// `text](url)…` → (text, url, bytes used).
fn link(after: &str) -> Option<(&str, &str, usize)> {
    let close = after.find("](")?;
    let label = &after[..close];
    let url_start = close + 2;
    let url_len = after[url_start..].find(')')?;
    let url = &after[url_start..url_start + url_len];
    (!label.is_empty() && !url.contains(' ')).then_some((label, url, url_start + url_len + 1))
}

/// The plain text of an ADF node: text nodes, mentions as their `attrs.text`, blocks
/// separated by newlines.
pub fn adf_to_text(v: &Value) -> String {
    let mut out = String::new();
    walk(v, &mut out);
    out.trim().to_string()
}

fn walk(v: &Value, out: &mut String) {
    match v["type"].as_str() {
        Some("text") => out.push_str(v["text"].as_str().unwrap_or_default()),
        Some("mention") => out.push_str(v["attrs"]["text"].as_str().unwrap_or_default()),
        Some("hardBreak") => out.push('\n'),
        _ => {
            for c in v["content"].as_array().into_iter().flatten() {
                walk(c, out);
            }
            if matches!(
                v["type"].as_str(),
                Some("paragraph" | "heading" | "codeBlock" | "listItem")
            ) {
                out.push('\n');
            }
        }
    }
}

/// Whether an ADF node mentions the account `account_id`.
pub fn adf_mentions(v: &Value, account_id: &str) -> bool {
    if v["type"] == "mention" && v["attrs"]["id"].as_str() == Some(account_id) {
        return true;
    }
    v["content"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| adf_mentions(c, account_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_is_one_paragraph() {
        assert_eq!(
            markdown_to_adf("CI passed on abc123"),
            json!({"type": "doc", "version": 1, "content": [{"type": "paragraph",
                "content": [{"type": "text", "text": "CI passed on abc123"}]}]})
        );
    }

    #[test]
    fn blocks_and_inline_marks_convert() {
        let md = "# Plan\n\nRun **now** with `cargo test`, see [docs](https://x.io) and _why_.\nSecond line\n\n```rust\nfn main() {}\n```\n\n- one\n- two\n\n1. first\n2. second";
        let doc = markdown_to_adf(md);
        let c = doc["content"].as_array().expect("content");
        assert_eq!(
            c[0],
            json!({"type": "heading", "attrs": {"level": 1},
            "content": [{"type": "text", "text": "Plan"}]})
        );
        let p = c[1]["content"].as_array().expect("inline");
        assert_eq!(
            p[1],
            json!({"type": "text", "text": "now", "marks": [{"type": "strong"}]})
        );
        assert_eq!(
            p[3],
            json!({"type": "text", "text": "cargo test", "marks": [{"type": "code"}]})
        );
        assert_eq!(
            p[5],
            json!({"type": "text", "text": "docs",
            "marks": [{"type": "link", "attrs": {"href": "https://x.io"}}]})
        );
        assert_eq!(
            p[7],
            json!({"type": "text", "text": "why", "marks": [{"type": "em"}]})
        );
        assert!(p.contains(&json!({"type": "hardBreak"})));
        assert_eq!(
            c[2],
            json!({"type": "codeBlock", "attrs": {"language": "rust"},
            "content": [{"type": "text", "text": "fn main() {}"}]})
        );
        assert_eq!(c[3]["type"], "bulletList");
        assert_eq!(c[3]["content"].as_array().map(Vec::len), Some(2));
        assert_eq!(c[4]["type"], "orderedList");
        assert_eq!(
            c[4]["content"][1]["content"][0]["content"][0]["text"],
            "second"
        );
    }

    #[test]
    fn no_empty_text_nodes() {
        let doc = markdown_to_adf("**bold**\n\n```\n```");
        assert!(!doc.to_string().contains(r#""text":"""#), "{doc}");
    }

    #[test]
    fn adf_text_and_mentions_read_back() {
        let v = json!({"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
            {"type": "mention", "attrs": {"id": "bot-1", "text": "@Flotilla"}},
            {"type": "text", "text": " /status"}]}]});
        assert!(adf_mentions(&v, "bot-1"));
        assert!(!adf_mentions(&v, "bot-2"));
        assert_eq!(adf_to_text(&v), "@Flotilla /status");
    }
}
