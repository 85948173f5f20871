//! Splitting a reply into messages a platform accepts: on paragraph boundaries (blank lines)
//! first, then on line boundaries, then (for one enormous line) on character boundaries.
//!
//! Limits are in characters (Unicode scalar values), never bytes, so a split never cuts a
//! character in two. Pure functions, no I/O.

/// Splits `text` into pieces of at most `max` characters each, preferring paragraph
/// boundaries, then line boundaries. Empty input gives no pieces; `max` of 0 is treated as 1.
pub fn split_message(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    if text.chars().count() <= max {
        return if text.trim().is_empty() {
            Vec::new()
        } else {
            vec![text.to_string()]
        };
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    for para in text.split("\n\n") {
        for piece in fit(para, max) {
            let plen = piece.chars().count();
            let sep = if cur.is_empty() { 0 } else { 2 };
            if cur_len + sep + plen <= max {
                if sep > 0 {
                    cur.push_str("\n\n");
                }
                cur.push_str(&piece);
                cur_len += sep + plen;
            } else {
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur = piece;
                cur_len = plen;
            }
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// One paragraph as pieces of at most `max` characters: whole, or by lines, or by characters.
fn fit(para: &str, max: usize) -> Vec<String> {
    if para.chars().count() <= max {
        return vec![para.to_string()];
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    for line in para.split('\n') {
        let llen = line.chars().count();
        if llen > max {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            let chars: Vec<char> = line.chars().collect();
            out.extend(chars.chunks(max).map(|c| c.iter().collect::<String>()));
            continue;
        }
        let sep = if cur.is_empty() { 0 } else { 1 };
        if cur_len + sep + llen <= max {
            if sep > 0 {
                cur.push('\n');
            }
            cur.push_str(line);
            cur_len += sep + llen;
        } else {
            out.push(std::mem::take(&mut cur));
            cur = line.to_string();
            cur_len = llen;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_piece_and_empty_text_none() {
        assert_eq!(split_message("hello", 10), vec!["hello".to_string()]);
        assert!(split_message("  ", 10).is_empty());
    }

    #[test]
    fn ten_thousand_characters_of_paragraphs_split_on_blank_lines_under_4096() {
        let para = "word ".repeat(59) + "end."; // 299 characters
        let text = vec![para.clone(); 34].join("\n\n");
        assert!(text.chars().count() > 10_000);
        let parts = split_message(&text, 4096);
        assert!(parts.len() >= 3, "{}", parts.len());
        for p in &parts {
            assert!(p.chars().count() <= 4096);
            assert!(
                p.starts_with("word") && p.ends_with("end."),
                "cut mid-paragraph"
            );
        }
        assert_eq!(parts.join("\n\n"), text);
    }

    #[test]
    fn a_long_paragraph_splits_on_lines_then_characters() {
        let text = format!("{}\n{}", "a".repeat(8), "é".repeat(25));
        let parts = split_message(&text, 10);
        assert_eq!(parts[0], "a".repeat(8));
        assert!(parts.iter().all(|p| p.chars().count() <= 10));
        assert_eq!(parts[1..].concat(), "é".repeat(25));
    }

    #[test]
    fn github_limit_keeps_pieces_under_65536() {
        let text = "x".repeat(70_000);
        let parts = split_message(&text, 65_000);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.chars().count() <= 65_000));
    }
}
