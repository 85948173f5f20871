//! Pricing: what tokens cost when an agent reports tokens but no cost of its own.
//!
//! A [`PriceTable`] is the user's `pricing:` section (model name or `*` glob → [`Price`]) over
//! Flotilla's built-in list prices ([`builtin`]): the user's entries win, the built-in ones
//! are the fallback, and a model neither knows has no price (its cost is `None`, never 0).
//! [`PriceTable::lookup`] says which of the two a price came from ([`PriceOrigin`]).
//!
//! Matching is case-insensitive. A key without `*` matches that model name exactly (also
//! after a `provider/` prefix: `openai/gpt-5` matches `gpt-5`); a key with `*` is a glob
//! (`claude-sonnet-4-5*`, `*llama*`). An exact key beats every glob; among globs the one with
//! the most literal characters wins (`gpt-5-mini*` over `gpt-5*`), then the first in key
//! order.

pub mod builtin;

use std::collections::BTreeMap;

// `Price` is defined beside its settings in `config` (which must not import this module);
// its arithmetic is here.
pub use crate::config::Price;
use crate::config::PriceSettings;
use crate::store::CostSource;

/// Token counts of one model, split the way they are priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens not served from a prompt cache.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Prompt-cache reads.
    pub cache_read: u64,
    /// Prompt-cache writes.
    pub cache_write: u64,
}

impl Tokens {
    /// Whether nothing was spent.
    pub fn is_zero(self) -> bool {
        self == Tokens::default()
    }
}

impl Price {
    /// What `t` costs at this price, in US dollars.
    pub fn cost(&self, t: Tokens) -> f64 {
        (t.input as f64 * self.input
            + t.output as f64 * self.output
            + t.cache_read as f64 * self.cache_read
            + t.cache_write as f64 * self.cache_write)
            / 1e6
    }
}

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceOrigin {
    /// The user's `pricing:` section.
    Config,
    /// Flotilla's built-in list prices.
    BuiltIn,
}

impl PriceOrigin {
    /// The `cost_source` of a cost priced at this origin.
    pub fn cost_source(self) -> CostSource {
        match self {
            PriceOrigin::Config => CostSource::Config,
            PriceOrigin::BuiltIn => CostSource::PriceTable,
        }
    }
}

/// A `pricing:` key: an exact model name or a `*` glob (lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPattern(String);

impl ModelPattern {
    /// The pattern a config key stands for.
    pub fn new(key: &str) -> ModelPattern {
        ModelPattern(key.trim().to_ascii_lowercase())
    }

    fn is_glob(&self) -> bool {
        self.0.contains('*')
    }

    /// Literal characters: the more, the more specific.
    fn specificity(&self) -> usize {
        self.0.chars().filter(|c| *c != '*').count()
    }

    /// Whether `model` (lower-cased) matches.
    fn matches(&self, model: &str) -> bool {
        if !self.is_glob() {
            return self.0 == model;
        }
        glob_match(&self.0, model)
    }
}

/// `*`-only glob matching (no other metacharacters: model names contain `.` and `[`).
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The user's prices over the built-in ones. Cheap to clone behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// The user's entries: exact names first, then globs by specificity.
    entries: Vec<(ModelPattern, Price)>,
}

impl PriceTable {
    /// Only the built-in prices.
    pub fn builtin_only() -> PriceTable {
        PriceTable::default()
    }

    /// The user's `pricing:` section over the built-in prices. The section is already
    /// validated (`Settings::validate` names any bad key); here it only becomes typed values.
    pub fn from_settings(pricing: &BTreeMap<String, PriceSettings>) -> PriceTable {
        let mut entries: Vec<(ModelPattern, Price)> = pricing
            .iter()
            .map(|(key, p)| (ModelPattern::new(key), p.price()))
            .collect();
        // Stable: ties keep key order.
        entries.sort_by_key(|(pat, _)| (pat.is_glob(), std::cmp::Reverse(pat.specificity())));
        PriceTable { entries }
    }

    /// The price of `model` and where it came from; `None` when neither the user's table nor
    /// the built-in one knows it.
    pub fn lookup(&self, model: &str) -> Option<(Price, PriceOrigin)> {
        let m = model.trim().to_ascii_lowercase();
        let bare = m.rsplit('/').next().unwrap_or(&m).to_string();
        let user = self
            .entries
            .iter()
            .find(|(pat, _)| pat.matches(&m) || pat.matches(&bare))
            .map(|(_, p)| (*p, PriceOrigin::Config));
        user.or_else(|| builtin::price(&m).map(|p| (p, PriceOrigin::BuiltIn)))
    }
}

/// A running sum of costs over models, remembering where prices came from and which models
/// had none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Priced {
    /// The sum so far (meaningless once `unpriced` is non-empty).
    sum: f64,
    /// Whether any price came from the user's table.
    from_config: bool,
    /// Whether any tokens were priced at all.
    any: bool,
    /// Models that spent tokens but have no price.
    pub unpriced: Vec<String>,
}

impl Priced {
    /// Adds `tokens` spent on `model` (nothing when they are zero).
    pub fn add(&mut self, table: &PriceTable, model: &str, tokens: Tokens) {
        if tokens.is_zero() {
            return;
        }
        match table.lookup(model) {
            Some((price, origin)) => {
                self.sum += price.cost(tokens);
                self.any = true;
                self.from_config |= origin == PriceOrigin::Config;
            }
            None => {
                let name = if model.is_empty() { "unknown" } else { model };
                if !self.unpriced.iter().any(|u| u == name) {
                    self.unpriced.push(name.to_string());
                }
            }
        }
    }

    /// The cost and its source: `None` cost with [`CostSource::Unpriced`] when some tokens
    /// had no price; `Some(0.0)` with no source when nothing was spent.
    pub fn result(&self) -> (Option<f64>, Option<CostSource>) {
        if !self.unpriced.is_empty() {
            (None, Some(CostSource::Unpriced))
        } else if !self.any {
            (Some(0.0), None)
        } else if self.from_config {
            (Some(self.sum), Some(CostSource::Config))
        } else {
            (Some(self.sum), Some(CostSource::PriceTable))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(entries: &[(&str, f64, f64)]) -> BTreeMap<String, PriceSettings> {
        entries
            .iter()
            .map(|(k, i, o)| {
                (
                    k.to_string(),
                    PriceSettings {
                        input: *i,
                        output: *o,
                        cache_read: None,
                        cache_write: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_builtin_table_is_the_fallback() {
        let t = PriceTable::builtin_only();
        let (p, origin) = t.lookup("claude-sonnet-4-5-20250929").expect("priced");
        assert_eq!(origin, PriceOrigin::BuiltIn);
        assert_eq!((p.input, p.output), (3.0, 15.0));
        assert!((p.cache_read - 0.3).abs() < 1e-12 && (p.cache_write - 3.75).abs() < 1e-12);
        let (p, _) = t.lookup("openai/gpt-5-codex").expect("priced");
        assert_eq!((p.input, p.cache_read, p.output), (1.25, 0.125, 10.0));
        assert_eq!(t.lookup("my-local-model"), None);
    }

    #[test]
    fn user_entries_override_the_builtin_ones_exact_before_globs() {
        let t = PriceTable::from_settings(&settings(&[
            ("claude-sonnet-4-5*", 1.0, 2.0),
            ("CLAUDE-SONNET-4-5-20250929", 7.0, 8.0),
            ("*", 100.0, 100.0),
            ("gpt-5*", 3.0, 3.0),
            ("gpt-5-mini*", 4.0, 4.0),
            ("my-local-model", 0.5, 0.5),
        ]));
        let price = |m: &str| t.lookup(m).map(|(p, o)| (p.input, p.output, o));
        assert_eq!(
            price("claude-sonnet-4-5-20250929"),
            Some((7.0, 8.0, PriceOrigin::Config))
        );
        assert_eq!(
            price("claude-sonnet-4-5-20991231"),
            Some((1.0, 2.0, PriceOrigin::Config))
        );
        assert_eq!(
            price("gpt-5-mini-2025"),
            Some((4.0, 4.0, PriceOrigin::Config))
        );
        assert_eq!(price("gpt-5.1"), Some((3.0, 3.0, PriceOrigin::Config)));
        assert_eq!(
            price("ollama/My-Local-Model"),
            Some((0.5, 0.5, PriceOrigin::Config))
        );
        // `*` catches everything else.
        assert_eq!(
            price("mystery-1"),
            Some((100.0, 100.0, PriceOrigin::Config))
        );
        // Cache prices default to the input price (never under-counted).
        let (p, _) = t.lookup("my-local-model").expect("priced");
        assert_eq!((p.cache_read, p.cache_write), (0.5, 0.5));
    }

    #[test]
    fn globs_match_only_what_they_say() {
        assert!(glob_match("claude-*-4-5*", "claude-opus-4-5-2025"));
        assert!(!glob_match("claude-*-4-5*", "claude-opus-4-1"));
        assert!(glob_match("*mini", "gpt-5-mini"));
        assert!(!glob_match("*mini", "gpt-5-mini-2025"));
        assert!(glob_match("a*a", "aa"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(!ModelPattern::new("gpt-5").matches("gpt-5-mini"));
    }

    #[test]
    fn an_unknown_model_makes_the_cost_unknown_never_zero() {
        let t = PriceTable::builtin_only();
        let spent = Tokens {
            input: 1000,
            output: 10,
            ..Tokens::default()
        };
        let mut p = Priced::default();
        assert_eq!(p.result(), (Some(0.0), None));
        p.add(&t, "claude-haiku-4-5", spent);
        let (cost, source) = p.result();
        assert!((cost.expect("priced") - (1000.0 * 1.0 + 10.0 * 5.0) / 1e6).abs() < 1e-12);
        assert_eq!(source, Some(CostSource::PriceTable));
        p.add(&t, "mystery-1", spent);
        p.add(&t, "mystery-1", spent);
        assert_eq!(p.result(), (None, Some(CostSource::Unpriced)));
        assert_eq!(p.unpriced, ["mystery-1"]);
        // Zero tokens on an unknown model cost nothing and are not "unpriced".
        let mut q = Priced::default();
        q.add(&t, "mystery-1", Tokens::default());
        assert_eq!(q.result(), (Some(0.0), None));
        // One price from the user's table makes the source `config`.
        let t = PriceTable::from_settings(&settings(&[("mystery-*", 1.0, 1.0)]));
        let mut r = Priced::default();
        r.add(&t, "claude-haiku-4-5", spent);
        r.add(&t, "mystery-1", spent);
        assert_eq!(r.result().1, Some(CostSource::Config));
    }
}
