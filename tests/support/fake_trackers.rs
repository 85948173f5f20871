//! Stateful fakes of the Linear GraphQL API (`issue(id:)`) and Jira Cloud's REST v3
//! (`GET /rest/api/3/issue/{key}`), with their real auth schemes and error bodies.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

#[derive(Default)]
struct State {
    linear_key: String,
    jira_auth: String,
    /// Linear issues by identifier (`ENG-12`): the `issue` node as Linear returns it.
    linear: BTreeMap<String, Value>,
    /// Jira issues by key: the REST resource.
    jira: BTreeMap<String, Value>,
    requests: u64,
}

type Shared = web::Data<Arc<Mutex<State>>>;

/// One server hosting both fakes.
pub struct FakeTrackers {
    /// Base URL: Linear at `{url}/graphql`, Jira at `{url}`.
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

fn lock(s: &Arc<Mutex<State>>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

async fn linear(req: HttpRequest, body: web::Json<Value>, st: Shared) -> HttpResponse {
    let mut s = lock(&st);
    s.requests += 1;
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != s.linear_key {
        return HttpResponse::BadRequest().json(json!({"errors": [{
            "message": "Authentication required, not authenticated",
            "extensions": {"code": "AUTHENTICATION_ERROR", "type": "authentication error"}}]}));
    }
    let query = body["query"].as_str().unwrap_or("");
    if !query.contains("issue(id:") {
        return HttpResponse::BadRequest().json(json!({"errors": [{
            "message": "Query not supported by the fake", "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]}));
    }
    let id = body["variables"]["id"].as_str().unwrap_or("");
    match s.linear.get(id) {
        Some(issue) => HttpResponse::Ok().json(json!({"data": {"issue": issue}})),
        None => HttpResponse::Ok().json(json!({"data": null, "errors": [{
            "message": "Entity not found: Issue",
            "path": ["issue"],
            "extensions": {"code": "NOT_FOUND", "type": "invalid input"}}]})),
    }
}

async fn jira(req: HttpRequest, key: web::Path<String>, st: Shared) -> HttpResponse {
    let mut s = lock(&st);
    s.requests += 1;
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != s.jira_auth {
        return HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Basic realm=\"jira\""))
            .json(json!({"errorMessages": ["You do not have the permission to see the specified issue."], "errors": {}}));
    }
    match s.jira.get(key.as_str()) {
        Some(issue) => HttpResponse::Ok().json(issue),
        None => HttpResponse::NotFound().json(json!({
            "errorMessages": ["Issue does not exist or you do not have permission to see it."],
            "errors": {}})),
    }
}

/// Standard base64 with padding (HTTP basic auth).
fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl FakeTrackers {
    /// Starts on a random port; Linear accepts `linear_key`, Jira `email:token` (basic).
    pub async fn start(linear_key: &str, jira_email: &str, jira_token: &str) -> FakeTrackers {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let basic = base64(format!("{jira_email}:{jira_token}").as_bytes());
        let state = Arc::new(Mutex::new(State {
            linear_key: linear_key.into(),
            jira_auth: format!("Basic {basic}"),
            ..Default::default()
        }));
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/graphql", web::post().to(linear))
                .route("/rest/api/3/issue/{key}", web::get().to(jira))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeTrackers { url, state, handle }
    }

    /// Adds a Linear issue.
    pub fn add_linear(
        &self,
        identifier: &str,
        title: &str,
        description: &str,
        branch: &str,
        labels: &[&str],
    ) {
        let issue = json!({
            "identifier": identifier, "title": title, "description": description,
            "url": format!("https://linear.app/acme/issue/{}", identifier.to_lowercase()),
            "branchName": branch,
            "labels": {"nodes": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()},
        });
        lock(&self.state).linear.insert(identifier.into(), issue);
    }

    /// Adds a Jira issue whose description is the ADF `description`.
    pub fn add_jira(&self, key: &str, summary: &str, description: Value, labels: &[&str]) {
        let issue = json!({
            "id": "10042", "key": key,
            "self": format!("{}/rest/api/3/issue/10042", self.url),
            "fields": {"summary": summary, "description": description, "labels": labels},
        });
        lock(&self.state).jira.insert(key.into(), issue);
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        lock(&self.state).requests
    }
}

impl Drop for FakeTrackers {
    fn drop(&mut self) {
        let h = self.handle.clone();
        actix_web::rt::spawn(async move { h.stop(false).await });
    }
}
