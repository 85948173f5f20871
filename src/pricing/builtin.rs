//! Flotilla's built-in list prices, the fallback below the user's `pricing:` section.
//! Approximate: long-context and 1-hour cache-write premiums are ignored. Update them with
//! the vendors' price pages; the user's table overrides any of them.

use super::Price;

/// The built-in price of `model` (lower-cased), if any: Anthropic families first, then
/// OpenAI ones.
pub fn price(model: &str) -> Option<Price> {
    anthropic(model).or_else(|| openai(model))
}

/// Anthropic list prices `(input, output)` by model family, matched as a substring of the
/// model name (`claude-sonnet-4-5-20250929`); cache writes cost 1.25× input, cache reads
/// 0.1× input.
pub fn anthropic(model: &str) -> Option<Price> {
    const TABLE: &[(&str, (f64, f64))] = &[
        ("opus-4-5", (5.0, 25.0)),
        ("opus-4-6", (5.0, 25.0)),
        ("opus", (15.0, 75.0)),
        ("sonnet", (3.0, 15.0)),
        ("haiku-4", (1.0, 5.0)),
        ("3-5-haiku", (0.8, 4.0)),
        ("haiku", (0.25, 1.25)),
    ];
    let m = model.to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(key, _)| m.contains(key))
        .map(|(_, (i, o))| Price {
            input: *i,
            output: *o,
            cache_read: i * 0.1,
            cache_write: i * 1.25,
        })
}

/// OpenAI list prices `(input, cached input, output)` (reasoning billed as output; no charge
/// for cache writes, so they cost input). Matched on the model name without a `provider/`
/// prefix: the family name exactly, or followed by a dated snapshot (`gpt-5-2025-08-07`) or
/// `-latest`; anything else (`gpt-5-codex-mini`, a newer `gpt-5.x`) is unknown.
pub fn openai(model: &str) -> Option<Price> {
    const TABLE: &[(&str, (f64, f64, f64))] = &[
        ("gpt-5.5", (5.0, 0.5, 30.0)),
        ("gpt-5.4", (2.5, 0.25, 15.0)),
        ("gpt-5.4-mini", (0.75, 0.075, 4.5)),
        ("gpt-5.4-nano", (0.2, 0.02, 1.25)),
        ("gpt-5.2", (1.75, 0.175, 14.0)),
        ("gpt-5.2-codex", (1.75, 0.175, 14.0)),
        ("gpt-5.1", (1.25, 0.125, 10.0)),
        ("gpt-5.1-codex", (1.25, 0.125, 10.0)),
        ("gpt-5.1-codex-max", (1.25, 0.125, 10.0)),
        ("gpt-5.1-codex-mini", (0.25, 0.025, 2.0)),
        ("gpt-5", (1.25, 0.125, 10.0)),
        ("gpt-5-codex", (1.25, 0.125, 10.0)),
        ("gpt-5-chat", (1.25, 0.125, 10.0)),
        ("gpt-5-mini", (0.25, 0.025, 2.0)),
        ("gpt-5-nano", (0.05, 0.005, 0.4)),
        ("gpt-5-pro", (15.0, 15.0, 120.0)),
        ("codex-mini", (1.5, 0.375, 6.0)),
        ("o4-mini", (1.1, 0.275, 4.4)),
        ("o3", (2.0, 0.5, 8.0)),
        ("o3-mini", (1.1, 0.55, 4.4)),
        ("o3-pro", (20.0, 20.0, 80.0)),
        ("o1", (15.0, 7.5, 60.0)),
        ("gpt-4.1", (2.0, 0.5, 8.0)),
        ("gpt-4.1-mini", (0.4, 0.1, 1.6)),
        ("gpt-4.1-nano", (0.1, 0.025, 0.4)),
        ("gpt-4o", (2.5, 1.25, 10.0)),
        ("gpt-4o-mini", (0.15, 0.075, 0.6)),
    ];
    let m = model.trim().to_ascii_lowercase();
    let m = m.rsplit('/').next().unwrap_or(&m);
    TABLE.iter().find_map(|(family, (i, c, o))| {
        let rest = m.strip_prefix(family)?;
        let suffix_ok = rest.is_empty()
            || rest == "-latest"
            || rest
                .strip_prefix('-')
                .is_some_and(|d| d.starts_with(|c: char| c.is_ascii_digit()));
        suffix_ok.then_some(Price {
            input: *i,
            output: *o,
            cache_read: *c,
            cache_write: *i,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ico(m: &str) -> Option<(f64, f64, f64)> {
        openai(m).map(|p| (p.input, p.cache_read, p.output))
    }

    #[test]
    fn openai_families_and_their_snapshots() {
        assert_eq!(ico("gpt-5"), Some((1.25, 0.125, 10.0)));
        assert_eq!(ico("gpt-5-2025-08-07"), Some((1.25, 0.125, 10.0)));
        assert_eq!(ico("openai/gpt-5-codex"), Some((1.25, 0.125, 10.0)));
        assert_eq!(ico("GPT-5-Mini"), Some((0.25, 0.025, 2.0)));
        assert_eq!(ico("o4-mini-2025-04-16"), Some((1.1, 0.275, 4.4)));
        assert_eq!(ico("gpt-4.1"), Some((2.0, 0.5, 8.0)));
        assert_eq!(ico("gpt-4.1-mini"), Some((0.4, 0.1, 1.6)));
        assert_eq!(ico("o3"), Some((2.0, 0.5, 8.0)));
        assert_eq!(ico("gpt-4o-latest"), Some((2.5, 1.25, 10.0)));
        // Not a snapshot of a known family: no price.
        assert_eq!(ico("gpt-5-codex-mini"), None);
        assert_eq!(ico("gpt-5.3"), None);
        assert_eq!(ico("o3-deep-research"), None);
        assert_eq!(ico("llama3"), None);
        assert_eq!(ico(""), None);
    }

    #[test]
    fn anthropic_families() {
        let io = |m: &str| anthropic(m).map(|p| (p.input, p.output));
        assert_eq!(io("claude-opus-4-1-20250805"), Some((15.0, 75.0)));
        assert_eq!(io("claude-opus-4-5-20251101"), Some((5.0, 25.0)));
        assert_eq!(io("claude-haiku-4-5"), Some((1.0, 5.0)));
        assert_eq!(io("mystery-1"), None);
    }
}
