//! `GET /api/v1/openapi.json`, generated from the handlers' `#[utoipa::path]` annotations,
//! then completed by [`contract`] with what every operation answers the same way (401 from
//! the token check, 422 for a parameter that does not parse, 413/408 for bodies, 503 when an
//! actor is busy, 404 for an unknown id) and the limits the handlers enforce, so the document
//! says what the server really does (`schemathesis --checks all` finds no difference).

use actix_web::HttpResponse;
use utoipa::OpenApi;

use super::{
    conversations, dashboard, events, fleet, health, notifications, sessions, terminal, ws,
};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Flotilla", description = "Runs a fleet of AI coding agents."),
    paths(
        health::healthz, health::readyz, health::metrics,
        sessions::list, sessions::spawn, sessions::get, sessions::send, sessions::kill,
        sessions::restore, sessions::merge, sessions::events, sessions::output,
        conversations::list, conversations::get, notifications::list,
        fleet::batch, fleet::attach, fleet::orchestrator, fleet::orphans, fleet::report,
        events::stream, ws::connect, spec,
        dashboard::board, terminal::connect,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, content_type = "application/json")))]
pub async fn spec(state: actix_web::web::Data<super::AppState>) -> HttpResponse {
    let mut doc = document();
    with_projects(&mut doc, &state.projects);
    // The spawn preflight's checks (a few `stat`s) run on the blocking pool.
    let agents = state.agents.clone();
    let ready = tokio::task::spawn_blocking(move || {
        let host = crate::preflight::HostEnv::current();
        agents
            .into_iter()
            .filter(|(_, launch)| {
                launch
                    .as_ref()
                    .is_none_or(|l| crate::preflight::agent_ready(l, &host).is_ok())
            })
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    with_agents(&mut doc, &ready);
    HttpResponse::Ok().json(doc)
}

/// The agents a spawn can start here (registered, and passing the spawn preflight: CLI on
/// the `PATH`, set-up done) as the only valid values of a spawn's `agent` (or `null`: the
/// project's agent): the server refuses any other (422).
pub fn with_agents(doc: &mut serde_json::Value, agents: &[String]) {
    let mut names: Vec<serde_json::Value> = agents.iter().map(|a| serde_json::json!(a)).collect();
    names.push(serde_json::Value::Null);
    for ptr in [
        "/components/schemas/SpawnRequest/properties/agent",
        "/components/schemas/BatchSpawnRequest/properties/agent",
    ] {
        if let Some(p) = doc.pointer_mut(ptr) {
            p["enum"] = serde_json::Value::Array(names.clone());
        }
    }
}

/// The configured projects as the only valid values where a project is named (spawn, batch
/// spawn, orchestrator): the server refuses any other (422).
pub fn with_projects(doc: &mut serde_json::Value, projects: &[String]) {
    let names = serde_json::json!(projects);
    for ptr in [
        "/components/schemas/SpawnRequest/properties/project",
        "/components/schemas/BatchSpawnRequest/properties/project",
    ] {
        if let Some(p) = doc.pointer_mut(ptr) {
            p["enum"] = names.clone();
        }
    }
    let orch = "/paths/~1api~1v1~1projects~1{project}~1orchestrator/post/parameters";
    if let Some(ps) = doc.pointer_mut(orch).and_then(|p| p.as_array_mut()) {
        for p in ps.iter_mut().filter(|p| p["name"] == "project") {
            p["schema"]["enum"] = names.clone();
        }
    }
}

/// The served document: the annotations plus [`contract`].
pub fn document() -> serde_json::Value {
    let mut v = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    contract(&mut v);
    v
}

/// The methods the document lists for a request path (templates like `{id}` match one
/// segment), or `None` when no documented path matches.
pub fn allowed_methods(path: &str) -> Option<Vec<String>> {
    static METHODS: std::sync::LazyLock<Vec<(Vec<String>, Vec<String>)>> =
        std::sync::LazyLock::new(|| {
            let doc = document();
            doc["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(p, item)| {
                    let segs = p.trim_matches('/').split('/').map(str::to_string).collect();
                    let methods = item
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(m, _)| HTTP_METHODS.contains(&m.as_str()))
                        .map(|(m, _)| m.to_ascii_uppercase())
                        .collect();
                    (segs, methods)
                })
                .collect()
        });
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    METHODS
        .iter()
        .find(|(tpl, _)| {
            tpl.len() == segs.len()
                && tpl
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
        .map(|(_, m)| m.clone())
}

/// The operation keys of an OpenAPI path item.
const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Limits the handlers enforce, per (path, parameter name): the schema keywords to add.
fn parameter_limits(path: &str, name: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    match (path, name) {
        // notifications::list refuses (422) a limit outside 1–1000.
        ("/api/v1/notifications", "limit") => {
            Some(json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": 1000}))
        }
        // events::resume_point refuses (422) a negative or non-integer Last-Event-ID.
        (_, "Last-Event-ID") => Some(json!({"type": "integer", "format": "int64", "minimum": 0})),
        // notifications::list refuses (422) another status ("" means any).
        ("/api/v1/notifications", "status") => Some(
            json!({"type": "string", "enum": ["", "pending", "delivered", "failed", "digested"]}),
        ),
        // `lines` is an unsigned integer: a negative one does not parse (422).
        (_, "lines") => Some(json!({"type": "integer", "minimum": 0})),
        _ => None,
    }
}

/// Completes the generated document (see the module doc). Idempotent.
pub fn contract(doc: &mut serde_json::Value) {
    use serde_json::json;
    let error = json!({"type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}});
    if let Some(c) = doc.pointer_mut("/components/schemas") {
        c["ApiError"] = error;
    } else if let Some(o) = doc.as_object_mut() {
        let comps = o.entry("components").or_insert_with(|| json!({}));
        comps["schemas"] = json!({"ApiError": error});
    }
    // ReportBody.state: one of the states an agent may report.
    if let Some(st) = doc.pointer_mut("/components/schemas/ReportBody/properties/state") {
        use clap::ValueEnum;
        let names: Vec<String> = crate::domain::machine::ReportedState::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        st["enum"] = json!(names);
    }
    // SpawnRequest.branch: git's rules as `check_branch_name` applies them (422 otherwise).
    if let Some(b) = doc.pointer_mut("/components/schemas/SpawnRequest/properties/branch") {
        b["pattern"] = json!(crate::plugins::worktree::BRANCH_PATTERN);
    }
    // BatchSpawnRequest.issues: fleet::batch refuses (422) an empty list.
    if let Some(i) = doc.pointer_mut("/components/schemas/BatchSpawnRequest/properties/issues") {
        i["minItems"] = json!(1);
    }
    // SendBody: sessions::send refuses (422) a message that is empty or only whitespace.
    if let Some(m) = doc.pointer_mut("/components/schemas/SendBody/properties/message") {
        m["minLength"] = json!(1);
        m["pattern"] = json!("\\S");
    }
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !HTTP_METHODS.contains(&method.as_str()) {
                continue;
            }
            complete_operation(path, op);
        }
    }
}

fn complete_operation(path: &str, op: &mut serde_json::Value) {
    use serde_json::json;
    let error_ref =
        json!({"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}});
    let params: Vec<(String, String)> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["in"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    if let Some(ps) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) {
        for p in ps.iter_mut() {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            if let Some(limits) = parameter_limits(path, &name) {
                p["schema"] = limits;
            }
        }
    }
    let api = path.starts_with("/api/v1/") || path.starts_with("/agent/v1/");
    if !api {
        // `/healthz`, `/readyz`, `/metrics` take no token (probes and scrapers).
        op["security"] = json!([]);
    }
    let has_body = op.get("requestBody").is_some();
    let has_path_param = params.iter().any(|(_, at)| at == "path");
    let has_input = has_body || params.iter().any(|(_, at)| at != "path");
    let mut add = |status: &str, description: &str| {
        let responses = op
            .as_object_mut()
            .map(|o| o.entry("responses").or_insert_with(|| json!({})));
        if let Some(r) = responses.and_then(|r| r.as_object_mut()) {
            let entry = r.entry(status.to_string()).or_insert_with(|| json!({}));
            if entry
                .get("description")
                .is_none_or(|d| d.as_str() == Some(""))
            {
                entry["description"] = json!(description);
            }
            if entry.get("content").is_none() {
                entry["content"] = error_ref.clone();
            }
        }
    };
    if api {
        add("401", "Missing or wrong bearer token");
        add(
            "503",
            "Busy (an actor did not answer in time) or the store is unavailable",
        );
    }
    if has_path_param {
        add("404", "No such resource");
    }
    if has_input {
        add(
            "422",
            "A parameter or the body is invalid (names the field)",
        );
    }
    if has_body {
        add("413", "The body is larger than `server.max_body_bytes`");
        add(
            "408",
            "The body did not arrive within `server.body_timeout`",
        );
    }
}
