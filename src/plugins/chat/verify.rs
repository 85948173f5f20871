//! Inbound request verification for the chat platforms, each by its own scheme
//! (wire-formats §2.1, §3.3, §4.3, §5.1). Every comparison is constant-time; an empty or
//! missing secret verifies nothing (an unauthenticated chat webhook would let anyone talk to
//! the assistant). Pure functions: the clock comes in as an argument.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Slack's replay window: a request older or newer than this is refused.
pub const SLACK_MAX_SKEW_SECS: i64 = 300;

/// Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:{ts}:{body}")>`, with
/// `X-Slack-Request-Timestamp` within five minutes of `now` (Unix seconds).
pub fn slack(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> bool {
    if secret.is_empty() {
        return false;
    }
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return false;
    };
    let Ok(ts_num) = ts.trim().parse::<i64>() else {
        return false;
    };
    if (now - ts_num).abs() > SLACK_MAX_SKEW_SECS {
        return false;
    }
    let Some(given) = sig
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(b"v0:");
    mac.update(ts.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Slack's `v0=<hex>` signature for `body` at `ts` (tests and fakes sign with it).
pub fn slack_sign(secret: &[u8], ts: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Telegram: `X-Telegram-Bot-Api-Secret-Token` equals the configured `secret_token`
/// byte for byte (a plain equality check, made constant-time).
pub fn telegram(secret: &[u8], header: Option<&str>) -> bool {
    match header {
        Some(h) if !secret.is_empty() => h.as_bytes().ct_eq(secret).into(),
        _ => false,
    }
}

/// Discord interactions: Ed25519 over `timestamp + body` with the application's hex public
/// key; `X-Signature-Ed25519` is the hex signature.
pub fn discord(
    public_key_hex: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> bool {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return false;
    };
    let Some(key) = hex::decode(public_key_hex.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
    else {
        return false;
    };
    let Some(sig) = hex::decode(sig.trim())
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s.as_slice()).ok())
        .map(|s| Signature::from_bytes(&s))
    else {
        return false;
    };
    let mut msg = Vec::with_capacity(ts.len() + body.len());
    msg.extend_from_slice(ts.as_bytes());
    msg.extend_from_slice(body);
    key.verify(&msg, &sig).is_ok()
}

/// Jira admin webhooks: `X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>` (the same
/// primitive as GitHub's, under another header name).
pub fn jira(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    crate::plugins::github::events::verify_signature(secret, body, header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slack_matches_the_documented_example_within_five_minutes_only() {
        let b = SLACK_BODY.as_bytes();
        let ts = Some("1531420618");
        assert_eq!(slack_sign(SLACK_SECRET, 1531420618, b), SLACK_SIG);
        assert!(slack(SLACK_SECRET, ts, Some(SLACK_SIG), b, 1531420618 + 60));
        assert!(!slack(
            SLACK_SECRET,
            ts,
            Some(SLACK_SIG),
            b,
            1531420618 + 301
        ));
        assert!(!slack(
            SLACK_SECRET,
            ts,
            Some(SLACK_SIG),
            b,
            1531420618 - 301
        ));
        assert!(!slack(SLACK_SECRET, ts, None, b, 1531420618));
        assert!(!slack(b"", ts, Some(SLACK_SIG), b, 1531420618));
        let mut tampered = SLACK_BODY.to_string();
        tampered.push('x');
        assert!(!slack(
            SLACK_SECRET,
            ts,
            Some(SLACK_SIG),
            tampered.as_bytes(),
            1531420618
        ));
    }

    #[test]
    fn telegram_secret_token_is_byte_equal() {
        assert!(telegram(b"abc_DEF-123", Some("abc_DEF-123")));
        assert!(!telegram(b"abc_DEF-123", Some("abc_DEF-12")));
        assert!(!telegram(b"abc_DEF-123", None));
        assert!(!telegram(b"", Some("")));
    }

    const PK: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn discord_verifies_rfc8032_and_the_discord_shaped_vector() {
        let rfc = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
        assert!(discord(PK, Some(""), Some(rfc), b""));
        let sig = "1695961a47c91a1ec033b819b7e87e3dbc583dd0cee6d1fd0216f58ac87b6228ae531ddbf91fb7bc28d7edf7f08604da16f54624f38a6bc0614e4dc13cd47f0f";
        assert!(discord(PK, Some("1700000000"), Some(sig), br#"{"type":1}"#));
        assert!(!discord(
            PK,
            Some("1700000001"),
            Some(sig),
            br#"{"type":1}"#
        ));
        assert!(!discord(
            PK,
            Some("1700000000"),
            Some(sig),
            br#"{"type":2}"#
        ));
        assert!(!discord(PK, None, Some(sig), br#"{"type":1}"#));
        assert!(!discord(
            "zz",
            Some("1700000000"),
            Some(sig),
            br#"{"type":1}"#
        ));
    }

    #[test]
    fn jira_uses_x_hub_signature_sha256() {
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(jira(
            b"It's a Secret to Everybody",
            Some(sig),
            b"Hello, World!"
        ));
        assert!(!jira(b"It's a Secret to Everybody", None, b"Hello, World!"));
        assert!(!jira(b"", Some(sig), b"Hello, World!"));
    }
}
