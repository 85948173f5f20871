//! A small Discord Gateway client (wire-formats §4.4): HELLO → heartbeats (op 1, answered
//! by op 11) → IDENTIFY (op 2) or RESUME (op 6) → dispatches; `MESSAGE_CREATE` goes through
//! [`super::discord::parse_message_create`] to the [`ChatInbox`].
//!
//! Why not a gateway crate: the maintained ones (twilight-gateway, serenity) connect to
//! Discord's own URL (twilight only lets a *proxy* URL replace it, with its own query rules)
//! and bring a second TLS/WebSocket stack to compile. This client is a few hundred lines on
//! `awc`'s WebSocket client, which the service already links, and `discord.gateway_url` points
//! it anywhere (tests use `tests/support/fake_discord.rs`).
//!
//! Resilience: on a closed or broken connection, op 7 RECONNECT or a missed heartbeat ACK, it
//! reconnects and RESUMEs with the last session id and sequence; op 9 INVALID SESSION with
//! `d: false` forgets the session and IDENTIFYs afresh. The Gateway has no redelivery, so a
//! `receive` the inbox refuses is retried a few times before the message is dropped (logged).
//! The close codes Discord marks "do not reconnect" (4004 bad token, 4010 invalid shard,
//! 4011 sharding required, 4012 invalid API version, 4013 invalid intents, 4014 disallowed
//! intents: Opcodes and Status Codes, "Gateway Close Event Codes") end the loop with a
//! [`GatewayStopped`] saying what to fix: retrying them only burns IDENTIFYs.
//! Runs on the actix system's thread (`awc` futures are not `Send`).

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use awc::ws::{Frame, Message};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};

use super::discord::parse_message_create;
use crate::config::DiscordSettings;
use crate::plugins::ChatInbox;

/// `GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT`.
pub const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);
/// Pause before reconnecting after a failure; doubled after each connection that never got
/// READY/RESUMED (a bad token must not burn Discord's 1,000 IDENTIFYs a day), up to
/// [`MAX_RECONNECT_BACKOFF`].
const RECONNECT_BACKOFF: Duration = Duration::from_secs(2);
/// Longest pause between reconnections.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(300);
/// Tries of `ChatInbox::receive` for one message.
const RECEIVE_TRIES: u32 = 3;
/// Largest gateway frame accepted (READY can be large).
const MAX_FRAME: usize = 4 << 20;

/// A gateway connection loop.
pub struct Gateway {
    url: String,
    token: String,
    /// The bot's user id, from READY.
    bot_id: String,
    session_id: Option<String>,
    resume_url: Option<String>,
    seq: Option<i64>,
    /// Whether the current connection got READY or RESUMED.
    ready: bool,
}

/// Why a connection ended.
enum End {
    /// Reconnect and resume.
    Resume,
    /// Reconnect and identify afresh.
    Identify,
    /// Closed with a code Discord says never to reconnect on.
    Fatal(GatewayStopped),
}

/// The gateway stopped for good: Discord closed it with a code it says not to reconnect on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("discord gateway closed with {code} ({meaning}); not reconnecting: {fix}")]
pub struct GatewayStopped {
    /// The close code.
    pub code: u16,
    /// Discord's name for it.
    pub meaning: &'static str,
    /// What the operator should do.
    pub fix: &'static str,
}

/// The close codes whose "Reconnect" column is `false` in Discord's table, with what to fix.
pub fn fatal_close(code: u16) -> Option<GatewayStopped> {
    let (meaning, fix) = match code {
        4004 => (
            "authentication failed",
            "discord.bot_token is wrong or was reset",
        ),
        4010 => (
            "invalid shard",
            "the shard sent when identifying is invalid",
        ),
        4011 => (
            "sharding required",
            "the bot is in too many guilds for one connection",
        ),
        4012 => (
            "invalid API version",
            "discord.gateway_url asks for a gateway version Discord no longer serves",
        ),
        4013 => ("invalid intents", "the intents bitfield is invalid"),
        4014 => (
            "disallowed intents",
            "enable the Message Content privileged intent for the bot in the Developer Portal",
        ),
        _ => return None,
    };
    Some(GatewayStopped { code, meaning, fix })
}

impl Gateway {
    /// The gateway, when `discord.bot_token` is set.
    pub fn from_settings(s: &DiscordSettings) -> Option<Self> {
        let token = s.bot_token.as_ref().filter(|t| !t.is_empty())?;
        Some(Gateway {
            url: s.gateway_url.clone(),
            token: token.expose().to_string(),
            bot_id: String::new(),
            session_id: None,
            resume_url: None,
            seq: None,
            ready: false,
        })
    }

    /// Connects, and reconnects, until the task is aborted or Discord closes the connection
    /// with a code it says never to reconnect on (then logs and returns why).
    pub async fn run(mut self, inbox: Arc<dyn ChatInbox>) -> GatewayStopped {
        let mut backoff = RECONNECT_BACKOFF;
        loop {
            self.ready = false;
            let ended = self.connect_once(inbox.as_ref()).await;
            backoff = if self.ready {
                RECONNECT_BACKOFF
            } else {
                (backoff * 2).min(MAX_RECONNECT_BACKOFF)
            };
            match ended {
                Ok(End::Resume) => {}
                Ok(End::Fatal(stopped)) => {
                    tracing::error!(code = stopped.code, error = %stopped, "discord gateway stopped");
                    return stopped;
                }
                Ok(End::Identify) => {
                    self.session_id = None;
                    self.seq = None;
                    self.resume_url = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "discord gateway connection failed");
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    fn with_query(base: &str) -> String {
        let base = base.trim_end_matches('/');
        if base.contains('?') {
            base.to_string()
        } else {
            format!("{base}/?v=10&encoding=json")
        }
    }

    async fn connect_once(&mut self, inbox: &dyn ChatInbox) -> Result<End, String> {
        let resuming = self.session_id.is_some();
        let url = Self::with_query(
            self.resume_url
                .as_deref()
                .filter(|_| resuming)
                .unwrap_or(&self.url),
        );
        let (_resp, mut ws) = awc::Client::new()
            .ws(url)
            .max_frame_size(MAX_FRAME)
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // HELLO first.
        let hello = match ws.next().await {
            Some(Ok(Frame::Text(t))) => serde_json::from_slice::<Value>(&t).unwrap_or_default(),
            other => {
                return Err(format!(
                    "expected HELLO, got {:?}",
                    other.map(|f| f.is_ok())
                ))
            }
        };
        if hello["op"].as_i64() != Some(10) {
            return Err("first frame is not HELLO".into());
        }
        let interval = Duration::from_millis(
            hello["d"]["heartbeat_interval"]
                .as_u64()
                .unwrap_or(41_250)
                .max(50),
        );
        let first = interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
        let mut next_beat = tokio::time::Instant::now() + first;
        let mut acked = true;

        let hello_reply = match (&self.session_id, self.seq) {
            (Some(sid), seq) => {
                json!({"op": 6, "d": {"token": self.token, "session_id": sid, "seq": seq}})
            }
            (None, _) => json!({"op": 2, "d": {"token": self.token, "intents": INTENTS,
                "properties": {"os": std::env::consts::OS, "browser": "flotilla", "device": "flotilla"}}}),
        };
        send(&mut ws, &hello_reply).await?;

        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_beat) => {
                    if !acked {
                        tracing::warn!("discord gateway missed a heartbeat ACK; reconnecting");
                        return Ok(End::Resume);
                    }
                    send(&mut ws, &json!({"op": 1, "d": self.seq})).await?;
                    acked = false;
                    next_beat = tokio::time::Instant::now() + interval;
                }
                frame = ws.next() => {
                    let frame = match frame {
                        None => return Ok(End::Resume),
                        Some(Err(e)) => return Err(format!("read: {e}")),
                        Some(Ok(f)) => f,
                    };
                    let v: Value = match frame {
                        Frame::Text(t) => serde_json::from_slice(&t).unwrap_or_default(),
                        Frame::Ping(p) => {
                            ws.send(Message::Pong(p)).await.map_err(|e| format!("pong: {e}"))?;
                            continue;
                        }
                        Frame::Close(reason) => {
                            tracing::info!(?reason, "discord gateway closed the connection");
                            // 4004 and 4010–4014 must not be retried; 4007 (bad sequence) and
                            // 4009 (session timed out) need a fresh IDENTIFY; other codes and
                            // plain closes may resume.
                            let code: u16 = reason.map(|r| r.code.into()).unwrap_or(1000);
                            if let Some(stopped) = fatal_close(code) {
                                return Ok(End::Fatal(stopped));
                            }
                            return Ok(if matches!(code, 4007 | 4009) {
                                End::Identify
                            } else {
                                End::Resume
                            });
                        }
                        _ => continue,
                    };
                    if let Some(s) = v["s"].as_i64() {
                        self.seq = Some(s);
                    }
                    match v["op"].as_i64() {
                        Some(0) => self.dispatch(&v, inbox).await,
                        Some(1) => send(&mut ws, &json!({"op": 1, "d": self.seq})).await?,
                        Some(7) => return Ok(End::Resume),
                        Some(9) => {
                            return Ok(if v["d"].as_bool().unwrap_or(false) { End::Resume } else { End::Identify });
                        }
                        Some(11) => acked = true,
                        _ => {}
                    }
                }
            }
        }
    }

    async fn dispatch(&mut self, v: &Value, inbox: &dyn ChatInbox) {
        match v["t"].as_str() {
            Some("READY") => {
                self.bot_id = v["d"]["user"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.session_id = v["d"]["session_id"].as_str().map(str::to_string);
                self.resume_url = v["d"]["resume_gateway_url"].as_str().map(str::to_string);
                self.ready = true;
                tracing::info!("discord gateway ready");
            }
            Some("RESUMED") => self.ready = true,
            Some("MESSAGE_CREATE") => {
                let Some(msg) = parse_message_create(&v["d"], &self.bot_id) else {
                    return;
                };
                for attempt in 1..=RECEIVE_TRIES {
                    match inbox.receive(msg.clone()).await {
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(attempt, error = %e, "chat inbox refused a discord message");
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt)))
                                .await;
                        }
                    }
                }
                tracing::error!(message_id = %msg.message_id, "discord message dropped: the inbox keeps refusing");
            }
            _ => {}
        }
    }
}

async fn send<S>(ws: &mut S, v: &Value) -> Result<(), String>
where
    S: futures::Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    ws.send(Message::Text(
        Bytes::from(v.to_string())
            .try_into()
            .map_err(|_| "utf8".to_string())?,
    ))
    .await
    .map_err(|e| format!("send: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_codes_discord_marks_not_to_retry_are_fatal() {
        for code in [4004, 4010, 4011, 4012, 4013, 4014] {
            assert_eq!(fatal_close(code).map(|s| s.code), Some(code));
        }
        for code in [1000, 1001, 4000, 4001, 4002, 4003, 4005, 4007, 4008, 4009] {
            assert!(fatal_close(code).is_none(), "{code}");
        }
        assert!(fatal_close(4014)
            .expect("fatal")
            .to_string()
            .contains("Message Content"));
    }
}
