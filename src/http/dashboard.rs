//! The web dashboard: `GET /` and `GET /assets/*` serve the page, its script and styles and the
//! vendored xterm.js, all compiled into the binary from `web/` (no Node build, no files to
//! install); `GET /api/v1/board` is the one read a page makes when it loads.
//!
//! The page and assets hold no data and are served without auth; everything with data is
//! under `/api/v1` behind the bearer token (the page asks for it and keeps it in
//! `localStorage`). After the board read, the page follows `/api/v1/events` from the board's
//! `cursor` and updates cards from events: it never re-lists, so the server's cost grows with
//! changes, not with clients × sessions (see `benches/dashboard.rs`).

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::store::{Activity, EventRecord, PrRef, SessionRecord, SessionState};

/// How much of a prompt a card carries; the session page reads the whole session.
const TASK_CHARS: usize = 240;

/// Event data keys a card uses; the rest (effects, messages to the agent) stays on the
/// session page, so a board of 1,000 sessions stays small.
const CARD_EVENT_KEYS: [&str; 6] = ["from", "to", "state", "reason", "reaction", "delivered"];

/// Headers every page and asset gets: scripts only from this origin, nothing framed.
/// (`style-src 'unsafe-inline'`: xterm.js sets element styles at run time.)
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Path under `/assets/` (`/` itself for the page).
    path: &'static str,
    /// `Content-Type`.
    content_type: &'static str,
    /// The bytes, compiled in.
    body: &'static [u8],
}

/// Every file the dashboard serves. Third-party files are the published npm files, pinned
/// and licensed as `web/vendor/README.md` says.
const ASSETS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/app.css"),
    },
    Asset {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/favicon.svg"),
    },
    Asset {
        path: "vendor/xterm.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/vendor/xterm.js"),
    },
    Asset {
        path: "vendor/xterm.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/vendor/xterm.css"),
    },
    Asset {
        path: "vendor/addon-fit.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/vendor/addon-fit.js"),
    },
];

/// ETags of the assets, computed once: browsers revalidate (`no-cache`) and get a 304 until
/// the binary changes. Weak, since the same tag covers the gzip and plain encodings.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("W/\"{}\"", &hex::encode(Sha256::digest(a.body))[..20]))
        .collect()
});

fn serve(req: &HttpRequest, path: &str) -> Option<HttpResponse> {
    let i = ASSETS.iter().position(|a| a.path == path)?;
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        // Weak comparison: `W/"x"` and `"x"` match.
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag.trim_start_matches("W/"))
        });
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    Some(if fresh {
        res.finish()
    } else {
        res.content_type(asset.content_type).body(asset.body)
    })
}

/// `GET /`: the dashboard page (no auth; it holds no data).
pub async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html").unwrap_or_else(|| HttpResponse::InternalServerError().finish())
}

/// `GET /assets/{path}`: the page's script, styles and vendored libraries (no auth).
///
/// # Errors
/// 404 for a path that is not embedded.
pub async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let path = path.into_inner();
    serve(&req, &path).ok_or_else(|| ApiError::NotFound(format!("no asset {path}")))
}

/// A reaction's retry state, as a card shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CardReaction {
    /// Reaction key (`ci-failed`…).
    pub reaction: String,
    /// How many times it fired.
    pub attempts: i64,
    /// Whether a human was told.
    pub escalated: bool,
}

/// A session as a board card shows it: the session row without runtime internals or the
/// whole prompt, its reactions and its newest event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardSession {
    /// `{prefix}-{N}`.
    pub id: String,
    /// Project.
    pub project: String,
    /// State.
    pub state: SessionState,
    /// Why it is in this state.
    pub reason: Option<String>,
    /// Agent name.
    pub agent: String,
    /// Runtime plugin.
    pub runtime: String,
    /// Branch.
    pub branch: Option<String>,
    /// The PR, or null.
    pub pr: Option<PrRef>,
    /// Tracker issue id.
    pub issue: Option<String>,
    /// The issue's web URL, when the tracker recorded one (`meta.issue_url`).
    pub issue_url: Option<String>,
    /// The task: the first characters of the prompt.
    pub task: Option<String>,
    /// `orchestrator` for a project's orchestrator session (`meta.role`).
    pub role: Option<String>,
    /// Last observed activity.
    pub activity: Activity,
    /// When it was observed.
    pub activity_at: Option<DateTime<Utc>>,
    /// Actor restarts after errors.
    pub restart_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Reaction trackers.
    pub reactions: Vec<CardReaction>,
    /// The newest event, with only the data a card shows.
    pub last_event: Option<EventRecord>,
}

impl From<SessionRecord> for BoardSession {
    fn from(s: SessionRecord) -> Self {
        let meta_str = |k: &str| s.meta.get(k).and_then(|v| v.as_str()).map(String::from);
        BoardSession {
            issue_url: meta_str("issue_url"),
            role: meta_str("role"),
            task: s
                .prompt
                .as_deref()
                .map(|p| p.chars().take(TASK_CHARS).collect()),
            id: s.id.0,
            project: s.project,
            state: s.state,
            reason: s.reason,
            agent: s.agent,
            runtime: s.runtime,
            branch: s.branch,
            pr: s.pr,
            issue: s.issue,
            activity: s.activity,
            activity_at: s.activity_at,
            restart_count: s.restart_count,
            created_at: s.created_at,
            updated_at: s.updated_at,
            reactions: Vec::new(),
            last_event: None,
        }
    }
}

/// An event with only the data keys a card uses.
fn card_event(mut e: EventRecord) -> EventRecord {
    if let serde_json::Value::Object(m) = &mut e.data {
        m.retain(|k, _| CARD_EVENT_KEYS.contains(&k.as_str()));
    }
    e
}

/// A project the spawn form offers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardProject {
    /// Name.
    pub name: String,
    /// Its default agent.
    pub agent: String,
}

/// What a dashboard page loads once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BoardView {
    /// Follow `/api/v1/events?after=cursor` (or `/api/v1/ws?after=cursor`) from here.
    pub cursor: i64,
    /// Every session, oldest first.
    pub sessions: Vec<BoardSession>,
    /// Configured projects.
    pub projects: Vec<BoardProject>,
    /// Configured agents.
    pub agents: Vec<String>,
}

/// The board: every session as a card, the configured projects and agents, and the event
/// cursor to follow. A page reads it once; changes then arrive on the event stream.
///
/// # Errors
/// 500 when the store cannot be read.
#[utoipa::path(get, path = "/api/v1/board",
    responses((status = 200, body = BoardView), (status = 401)))]
pub async fn board(state: web::Data<AppState>) -> Result<web::Json<BoardView>, ApiError> {
    let b = state.reads.board().await?;
    let mut sessions: Vec<BoardSession> = b.sessions.into_iter().map(Into::into).collect();
    let index: std::collections::HashMap<String, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    for (id, t) in b.trackers {
        if let Some(&i) = index.get(id.as_str()) {
            sessions[i].reactions.push(CardReaction {
                reaction: t.reaction,
                attempts: t.attempts,
                escalated: t.escalated,
            });
        }
    }
    for e in b.latest_events {
        let i = e.session_id.as_ref().and_then(|id| index.get(id.as_str()));
        if let Some(&i) = i {
            sessions[i].last_event = Some(card_event(e));
        }
    }
    Ok(web::Json(BoardView {
        cursor: b.cursor,
        sessions,
        projects: b
            .projects
            .into_iter()
            .map(|(name, agent)| BoardProject { name, agent })
            .collect(),
        agents: b.agents,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_path_and_a_body() {
        let mut paths: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        assert!(ASSETS.iter().all(|a| !a.body.is_empty()));
    }

    #[test]
    fn a_card_event_keeps_only_what_a_card_shows() {
        let e = EventRecord {
            id: 7,
            session_id: None,
            kind: "ci.failed".into(),
            data: serde_json::json!({"from": "pr_open", "to": "ci_failed", "state": "ci_failed",
                "reason": null, "effects": [{"type": "send_to_agent", "message": "long"}]}),
            at: Utc::now(),
        };
        let data = card_event(e).data;
        assert!(data.get("effects").is_none());
        assert_eq!(data["state"], "ci_failed");
    }
}
