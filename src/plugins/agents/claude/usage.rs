//! Claude Code's usage, read from its log as the log grows.
//!
//! Claude Code logs each content block of a message as an entry of its own, each repeating
//! its message's usage, so usage is counted once per message id (the last copy wins: it has
//! the final output count). The cost is Claude Code's own (`cost-state.totalCostUSD`, which
//! it writes after a turn) when that entry comes after the last assistant message and knows
//! every model's price; otherwise the tokens are priced with the `pricing:` table over the
//! built-in prices. `cost_source` says which; a model without a price makes the cost `None`
//! (`unpriced`, the model named).
//!
//! The plugin keeps each log's [`UsageTally`] in a [`Tallies`](super::super::log_tally::Tallies)
//! and feeds it only what the log gained since the last look.

use std::collections::HashMap;

use serde_json::Value;

use super::super::log_tally::Tally;
use crate::plugins::activity::Usage;
use crate::pricing::{PriceTable, Priced, Tokens};

/// The usage of the whole log `log`, priced with `prices`.
pub fn usage(log: &str, prices: &PriceTable) -> Usage {
    let mut tally = UsageTally::default();
    tally.feed(log);
    tally.usage(prices)
}

/// One message's tokens.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Index into [`UsageTally::models`].
    model: usize,
    input: u64,
    output: u64,
    cache_write: u64,
    cache_read: u64,
}

/// What the lines of a log read so far add up to.
#[derive(Debug, Default)]
pub struct UsageTally {
    /// Each message's counts, by message id.
    by_message: HashMap<String, Counts>,
    /// The models named, each once.
    models: Vec<String>,
    /// Claude Code's own cost, while no assistant message followed it.
    agent_cost: Option<f64>,
}

impl Tally for UsageTally {
    fn feed(&mut self, text: &str) {
        for line in text.lines() {
            if line.contains("\"type\":\"assistant\"") {
                self.agent_cost = None; // a newer message than the last cost-state
            }
            if line.contains("\"usage\"") {
                self.message(line);
            }
            if line.contains("\"cost-state\"") {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if v["type"].as_str() == Some("cost-state") {
                    self.agent_cost = v["totalCostUSD"]
                        .as_f64()
                        .filter(|_| v["hasUnknownModelCost"].as_bool() != Some(true));
                }
            }
        }
    }
}

impl UsageTally {
    /// Records the usage of an assistant entry `line`.
    fn message(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let msg = &v["message"];
        let model = msg["model"].as_str().unwrap_or("");
        if v["type"].as_str() != Some("assistant") || model == "<synthetic>" {
            return;
        }
        let u = &msg["usage"];
        let n = |k: &str| u[k].as_u64().unwrap_or(0);
        let id = msg["id"]
            .as_str()
            .or_else(|| v["uuid"].as_str())
            .unwrap_or("")
            .to_string();
        let model = match self.models.iter().position(|m| m == model) {
            Some(i) => i,
            None => {
                self.models.push(model.to_string());
                self.models.len() - 1
            }
        };
        self.by_message.insert(
            id,
            Counts {
                model,
                input: n("input_tokens"),
                output: n("output_tokens"),
                cache_write: n("cache_creation_input_tokens"),
                cache_read: n("cache_read_input_tokens"),
            },
        );
    }

    /// The usage so far, priced with `prices` unless the agent's own cost covers it.
    pub fn usage(&self, prices: &PriceTable) -> Usage {
        let mut total = Usage::default();
        if let Some(cost) = self.agent_cost {
            for c in self.by_message.values() {
                total.input_tokens += c.input;
                total.output_tokens += c.output;
                total.cache_tokens += c.cache_write + c.cache_read;
            }
            total.cost_usd = Some(cost);
            total.cost_source = Some(crate::store::CostSource::Agent);
            return total;
        }
        let mut priced = Priced::default();
        for c in self.by_message.values() {
            total.input_tokens += c.input;
            total.output_tokens += c.output;
            total.cache_tokens += c.cache_write + c.cache_read;
            priced.add(
                prices,
                &self.models[c.model],
                Tokens {
                    input: c.input,
                    output: c.output,
                    cache_read: c.cache_read,
                    cache_write: c.cache_write,
                },
            );
        }
        (total.cost_usd, total.cost_source) = priced.result();
        total.unpriced_models = priced.unpriced;
        total
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::log_tally::{append, Tallies};
    use super::*;

    const A: &str = r#"{"type":"assistant","message":{"id":"m1","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"a"}],"usage":{"input_tokens":10,"output_tokens":1}}}"#;
    const A_LAST: &str = r#"{"type":"assistant","message":{"id":"m1","model":"claude-sonnet-4-5-20250929","content":[{"type":"tool_use","id":"t","name":"Bash","input":{}}],"usage":{"input_tokens":10,"output_tokens":7}}}"#;
    const B: &str = r#"{"type":"assistant","message":{"id":"m2","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"b"}],"usage":{"input_tokens":20,"output_tokens":3}}}"#;
    const COST: &str = r#"{"type":"cost-state","totalCostUSD":0.5}"#;

    /// Read on look by look, the log adds up as it does read whole: a message's later copy
    /// replaces its first even across looks, and the agent's own cost holds until a newer
    /// message.
    #[tokio::test]
    async fn a_log_read_on_look_by_look_adds_up_as_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("s.jsonl");
        let prices = PriceTable::default();
        let tallies = Tallies::<UsageTally>::default();
        let look = || async {
            let u = tallies
                .read(&log, |t| t.usage(&prices))
                .await
                .expect("read")
                .expect("a log");
            let whole = usage(&std::fs::read_to_string(&log).expect("log"), &prices);
            assert_eq!(
                (u.input_tokens, u.output_tokens, u.cost_usd, u.cost_source),
                (
                    whole.input_tokens,
                    whole.output_tokens,
                    whole.cost_usd,
                    whole.cost_source
                )
            );
            (u.input_tokens, u.output_tokens, u.cost_source)
        };
        append(&log, &format!("{A}\n"));
        assert_eq!(look().await.0, 10);
        append(&log, &format!("{A_LAST}\n"));
        assert_eq!(look().await.1, 7, "the message's last copy");
        append(&log, &format!("{COST}\n"));
        assert_eq!(look().await.2, Some(crate::store::CostSource::Agent));
        append(&log, &format!("{B}\n"));
        let (input, output, source) = look().await;
        assert_eq!((input, output), (30, 10));
        assert_ne!(source, Some(crate::store::CostSource::Agent));
    }
}
