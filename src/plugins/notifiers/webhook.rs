//! `webhook`: POSTs the notification as JSON (INTERFACE.md: at least `id`, `priority`,
//! `event`, `session`, `message`) and, when a secret is set, signs the exact body bytes with
//! `X-Flotilla-Signature-256: sha256=<hex HMAC-SHA256>` (GitHub's scheme, so receivers can
//! reuse their verifiers). Any 2xx is a delivery; receivers dedupe on `id`.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use super::{post_json, status_error};
use crate::plugins::{Notification, Notifier, PluginError, PluginResult, PostedMessage};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Flotilla-Signature-256";
/// The event header (the body's `event`), for receivers that route before parsing.
pub const EVENT_HEADER: &str = "X-Flotilla-Event";
/// The delivery header (the body's `id`).
pub const DELIVERY_HEADER: &str = "X-Flotilla-Delivery";

/// Posts signed JSON to a URL.
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
}

impl WebhookNotifier {
    /// A notifier posting to `url`, signing with `secret` when given.
    pub fn new(client: reqwest::Client, url: String, secret: Option<String>) -> Self {
        WebhookNotifier {
            client,
            url,
            secret,
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn header(name: &'static str, value: &str) -> PluginResult<(HeaderName, HeaderValue)> {
    let v = HeaderValue::from_str(value)
        .map_err(|_| PluginError::Invalid(format!("{name} value is not a valid header")))?;
    Ok((HeaderName::from_static(name), v))
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn notify(&self, n: &Notification) -> PluginResult<Option<PostedMessage>> {
        let body = serde_json::to_vec(n)
            .map_err(|e| PluginError::Invalid(format!("cannot encode the notification: {e}")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in [
            header("x-flotilla-event", &n.event)?,
            header("x-flotilla-delivery", &n.id)?,
        ] {
            headers.insert(name, value);
        }
        if let Some(secret) = &self.secret {
            let (name, value) = header("x-flotilla-signature-256", &signature(secret, &body))?;
            headers.insert(name, value);
        }
        let a = post_json(&self.client, "webhook", &self.url, headers, body).await?;
        if (200..300).contains(&a.status) {
            Ok(None)
        } else {
            Err(status_error("webhook", &a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_has_the_interface_fields() {
        let n = Notification {
            id: "n-1".into(),
            priority: "urgent".into(),
            event: "agent.exited".into(),
            session: Some("demo-1".into()),
            message: "bye".into(),
            ..Notification::default()
        };
        let v = serde_json::to_value(&n).expect("json");
        for k in ["id", "priority", "event", "session", "message"] {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
    }
}
