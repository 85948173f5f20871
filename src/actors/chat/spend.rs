//! What chat turns cost and whether a conversation may spend more.
//!
//! A turn's cost is the assistant's own figure when it reports one (`cost_source: agent`);
//! otherwise its tokens are priced at the turn's model (the one the assistant named, else
//! `chat.assistant.model`) from the `pricing:` table over the built-in prices (`config` or
//! `price_table`). A model without a price leaves the cost `null` (`unpriced`, the model
//! named in the event), never 0. Each turn is recorded as a `chat.turn_usage` event; a
//! conversation's spend is the sum of those events, so it survives restarts.
//!
//! `chat.budget_usd` caps a conversation's spend: once reached, further assistant turns are
//! refused with a reply ([`over_budget`], [`crate::domain::chat::refusal`]); the turn that
//! crosses it is told ([`crate::domain::chat::crossed`]).

use super::ChatContext;
use crate::plugins::TurnUsage;
use crate::pricing::{PriceTable, Priced, Tokens};
use crate::store::{ConversationRecord, CostSource, NewEvent, SharedStore};

/// A turn's usage with its cost settled.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedTurn {
    /// The usage, `cost_usd` filled in when it was priced here.
    pub usage: TurnUsage,
    /// Where the cost came from (`None` when nothing was spent and no cost reported).
    pub cost_source: Option<CostSource>,
    /// The model that had no price, when the cost is unknown for that reason.
    pub unpriced_models: Vec<String>,
}

/// Settles a turn's cost: the assistant's own, else its tokens at `prices`.
pub fn price_turn(prices: &PriceTable, default_model: Option<&str>, u: TurnUsage) -> PricedTurn {
    if u.cost_usd.is_some() {
        return PricedTurn {
            usage: u,
            cost_source: Some(CostSource::Agent),
            unpriced_models: Vec::new(),
        };
    }
    let model = u.model.as_deref().or(default_model).unwrap_or("");
    let mut priced = Priced::default();
    priced.add(
        prices,
        model,
        Tokens {
            input: u.input_tokens,
            output: u.output_tokens,
            // Claude's cache reads and writes and Codex's cached input arrive as one count:
            // priced as reads (the cheaper, and for Codex the exact, kind).
            cache_read: u.cache_tokens,
            cache_write: 0,
        },
    );
    let (cost, source) = priced.result();
    PricedTurn {
        usage: TurnUsage {
            cost_usd: cost,
            ..u
        },
        cost_source: source,
        unpriced_models: priced.unpriced,
    }
}

/// The conversation's spend so far when `budget` is set and reached; `None` when it may go
/// on (no budget, under it, or the spend cannot be read: a store error does not block chat,
/// it is logged).
pub async fn over_budget(
    store: &SharedStore,
    conversation: &str,
    budget: Option<f64>,
) -> Option<f64> {
    let max = budget?;
    match store.conversation_spend(conversation).await {
        Ok(spent) => (spent >= max).then_some(spent),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a conversation's spend: its budget is not checked");
            None
        }
    }
}

/// Records what a turn cost as a `chat.turn_usage` event: the assistant's own cost, else its
/// tokens priced from the `pricing:` table ([`price_turn`]), with `cost_source` and,
/// for a model without a price, `unpriced_models`. The event log is where a conversation's
/// spend is summed (`chat.budget_usd`). Returns whether the event was written.
pub(super) async fn record_usage(
    ctx: &ChatContext,
    conv: &ConversationRecord,
    message: i64,
    session: Option<&str>,
    u: TurnUsage,
) -> bool {
    let Some(journal) = &ctx.journal else {
        tracing::debug!("no journal: a chat turn's usage is not recorded");
        return false;
    };
    let priced = price_turn(&ctx.prices, ctx.settings.assistant.model.as_deref(), u);
    if !priced.unpriced_models.is_empty() {
        tracing::warn!(models = ?priced.unpriced_models, "a chat turn's model has no price: its cost is unknown (add it under pricing:)");
    }
    let mut data = serde_json::json!({
        "conversation": conv.id,
        "message": message,
        "assistant": ctx.assistant.kind(),
        "command": conv.last_command,
        "session": session,
        "usage": priced.usage,
        "cost_source": priced.cost_source,
    });
    if !priced.unpriced_models.is_empty() {
        data["unpriced_models"] = serde_json::json!(priced.unpriced_models);
    }
    let event = NewEvent {
        session_id: None,
        kind: TURN_USAGE_EVENT.into(),
        data,
        at: chrono::Utc::now(),
    };
    match journal.append(&event).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot record a chat turn's usage");
            false
        }
    }
}

/// The event kind of a chat turn's usage.
pub const TURN_USAGE_EVENT: &str = crate::store::CHAT_TURN_USAGE;

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(model: Option<&str>) -> TurnUsage {
        TurnUsage {
            input_tokens: 1000,
            output_tokens: 100,
            cache_tokens: 10_000,
            model: model.map(str::to_string),
            ..TurnUsage::default()
        }
    }

    #[test]
    fn the_assistants_cost_wins_else_the_tokens_are_priced() {
        let table = PriceTable::builtin_only();
        let own = price_turn(
            &table,
            None,
            TurnUsage {
                cost_usd: Some(0.5),
                ..tokens(Some("claude-haiku-4-5"))
            },
        );
        assert_eq!(own.usage.cost_usd, Some(0.5));
        assert_eq!(own.cost_source, Some(CostSource::Agent));
        // Codex: no model in the usage; the configured one prices it.
        let t = price_turn(&table, Some("gpt-5-codex"), tokens(None));
        let want = (1000.0 * 1.25 + 100.0 * 10.0 + 10_000.0 * 0.125) / 1e6;
        assert!(
            (t.usage.cost_usd.expect("priced") - want).abs() < 1e-12,
            "{t:?}"
        );
        assert_eq!(t.cost_source, Some(CostSource::PriceTable));
        // The model the assistant named beats the configured one.
        let t = price_turn(
            &table,
            Some("gpt-5-codex"),
            tokens(Some("claude-haiku-4-5")),
        );
        let want = (1000.0 * 1.0 + 100.0 * 5.0 + 10_000.0 * 0.1) / 1e6;
        assert!(
            (t.usage.cost_usd.expect("priced") - want).abs() < 1e-12,
            "{t:?}"
        );
    }

    #[test]
    fn an_unknown_model_leaves_the_cost_unknown_and_named() {
        let t = price_turn(&PriceTable::builtin_only(), None, tokens(Some("mystery-1")));
        assert_eq!(t.usage.cost_usd, None);
        assert_eq!(t.cost_source, Some(CostSource::Unpriced));
        assert_eq!(t.unpriced_models, ["mystery-1"]);
        let t = price_turn(&PriceTable::builtin_only(), None, tokens(None));
        assert_eq!(t.unpriced_models, ["unknown"]);
    }
}
