//! Linear's signed webhooks (`POST /webhooks/linear`) and issue intake.
//!
//! Linear signs the raw body: `Linear-Signature` is the hex HMAC-SHA256 under the webhook's
//! secret (`linear.webhook_secret`), checked in constant time; the body's `webhookTimestamp`
//! (milliseconds) must be within [`FRESH`] of now, so a captured delivery cannot be replayed
//! later; within that window the `Linear-Delivery` id is recorded and a repeat is a duplicate.
//!
//! Intake: an `Issue` created or updated with the label `projects.<name>.intake.label` (or
//! assigned to `intake.assignee`, by user id or name) starts one session for it, at most once
//! per issue (a label removed and added again starts nothing).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::config::Secret;

/// How far `webhookTimestamp` may be from now (Linear's guidance: a minute).
pub const FRESH_MS: i64 = 60_000;

/// Why a delivery is refused (all are answered 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    /// No secret configured, no header, or a signature that does not match.
    #[error("missing or invalid Linear-Signature")]
    BadSignature,
    /// Signed, but `webhookTimestamp` is missing or too old (or in the future).
    #[error("stale delivery: webhookTimestamp is not within a minute of now")]
    Stale,
    /// Not a JSON object.
    #[error("payload is not a JSON object")]
    Malformed,
}

/// What the intake needs from a verified delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `type` (`Issue`, `Comment`…).
    pub kind: String,
    /// `action` (`create`, `update`, `remove`).
    pub action: String,
    /// The issue's id (`data.id`) and identifier (`ENG-42`), for `Issue` deliveries.
    pub issue: Option<(String, String)>,
    /// The issue's label names.
    pub labels: Vec<String>,
    /// The issue's assignee, by id and name (`data.assignee`, `data.assigneeId`).
    pub assignees: Vec<String>,
}

/// The `linear:` intake settings the endpoint runs with.
#[derive(Debug, Clone)]
pub struct LinearHook {
    /// `linear.webhook_secret`.
    pub secret: Secret,
    /// `projects.<name>.intake.label`: the label that hands an issue to Flotilla.
    pub intake_label: Option<String>,
    /// `projects.<name>.intake.assignee`: the user (id or name) that takes issues for
    /// Flotilla.
    pub intake_assignee: Option<String>,
    /// The project intake spawns into (the first project with `tracker: linear` and an
    /// intake label).
    pub project: Option<String>,
}

impl LinearHook {
    /// From `linear:` and the projects; `None` without a (non-empty) webhook secret.
    pub fn from_settings(settings: &crate::config::Settings) -> Option<Self> {
        let secret = settings
            .linear
            .webhook_secret
            .clone()
            .filter(|s| !s.expose().is_empty())?;
        // The first Linear project with an intake takes the issues handed over.
        let clean = |s: &Option<String>| s.clone().filter(|l| !l.trim().is_empty());
        let intake = settings.projects.iter().find_map(|(name, p)| {
            let (label, assignee) = (clean(&p.intake.label), clean(&p.intake.assignee));
            (p.tracker == Some(crate::config::TrackerKind::Linear)
                && (label.is_some() || assignee.is_some()))
            .then(|| (name.clone(), label, assignee))
        });
        let (project, intake_label, intake_assignee) = match intake {
            Some((p, l, a)) => (Some(p), l, a),
            None => (None, None, None),
        };
        Some(LinearHook {
            secret,
            intake_label,
            intake_assignee,
            project,
        })
    }

    /// The issue identifier to start a session for, if this delivery asks for one.
    pub fn intake<'a>(&self, d: &'a Delivery) -> Option<&'a (String, String)> {
        self.project.as_ref()?;
        let has = |want: &Option<String>, names: &[String]| {
            want.as_deref()
                .is_some_and(|w| names.iter().any(|n| n.eq_ignore_ascii_case(w)))
        };
        let wanted = d.kind == "Issue"
            && matches!(d.action.as_str(), "create" | "update")
            && (has(&self.intake_label, &d.labels) || has(&self.intake_assignee, &d.assignees));
        wanted.then_some(d.issue.as_ref()).flatten()
    }
}

/// Verifies and reads a delivery; `now_ms` is the current time in epoch milliseconds.
///
/// # Errors
/// [`HookError`]: every one is a 401 (or 400 for `Malformed`) and nothing is started.
pub fn verify(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
    now_ms: i64,
) -> Result<Delivery, HookError> {
    if secret.is_empty() {
        return Err(HookError::BadSignature);
    }
    let given = signature
        .and_then(|s| hex::decode(s.trim()).ok())
        .ok_or(HookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| HookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| HookError::BadSignature)?;
    let v: Value = serde_json::from_slice(body).map_err(|_| HookError::Malformed)?;
    if !v.is_object() {
        return Err(HookError::Malformed);
    }
    let at = v["webhookTimestamp"].as_i64().ok_or(HookError::Stale)?;
    if (now_ms - at).abs() > FRESH_MS {
        return Err(HookError::Stale);
    }
    let data = &v["data"];
    let kind = v["type"].as_str().unwrap_or_default().to_string();
    let issue = (kind == "Issue")
        .then(|| {
            Some((
                data["id"].as_str()?.to_string(),
                data["identifier"].as_str()?.to_string(),
            ))
        })
        .flatten();
    let labels = data["labels"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let assignees = [
        &data["assignee"]["id"],
        &data["assignee"]["name"],
        &data["assigneeId"],
    ]
    .iter()
    .filter_map(|v| v.as_str().map(str::to_string))
    .collect();
    Ok(Delivery {
        kind,
        action: v["action"].as_str().unwrap_or_default().to_string(),
        issue,
        labels,
        assignees,
    })
}

/// `Linear-Signature` for `body` under `secret` (what Linear sends; used by tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(at: i64, labels: &[&str]) -> Vec<u8> {
        json!({"action": "update", "type": "Issue", "webhookTimestamp": at,
            "data": {"id": "uuid-1", "identifier": "ENG-1", "title": "t",
                     "labels": labels.iter().map(|l| json!({"id": "x", "name": l})).collect::<Vec<_>>()}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn linear_hook_signed_fresh_deliveries_verify_and_others_do_not() {
        let now = 1_700_000_000_000;
        let b = body(now - 1000, &["Flotilla"]);
        let sig = sign(b"s3cret", &b);
        let d = verify(b"s3cret", &b, Some(&sig), now).expect("verifies");
        assert_eq!(d.issue, Some(("uuid-1".into(), "ENG-1".into())));
        assert_eq!(
            verify(b"other", &b, Some(&sig), now),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", &b, None, now),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify(b"", &b, Some(&sig), now),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", &b, Some(&sig), now + FRESH_MS + 1001),
            Err(HookError::Stale)
        );
        let hook = LinearHook {
            secret: Secret::new("s3cret"),
            intake_label: Some("flotilla".into()),
            intake_assignee: Some("Flotilla Bot".into()),
            project: Some("demo".into()),
        };
        assert!(hook.intake(&d).is_some());
        let assigned = Delivery {
            labels: vec![],
            assignees: vec!["user-9".into(), "flotilla bot".into()],
            ..d.clone()
        };
        assert!(hook.intake(&assigned).is_some());
        let other = verify(
            b"s3cret",
            &body(now, &["bug"]),
            Some(&sign(b"s3cret", &body(now, &["bug"]))),
            now,
        )
        .expect("verifies");
        assert!(hook.intake(&other).is_none());
    }
}
