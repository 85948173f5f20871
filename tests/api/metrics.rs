//! `/metrics` is valid Prometheus text, checked by the real `promtool`.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn metrics_pass_promtool_and_count_what_happened() {
    let app = spawn_app().await;
    let id = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    app.wait_state(&id, "done").await;
    let text = app.metrics().await;
    for name in [
        "flotilla_sessions{state=\"done\"}",
        "flotilla_session_transitions_total{from=\"spawning\",to=\"working\"}",
        "flotilla_http_requests_total{route=\"/api/v1/sessions\",status=\"201\"}",
        "flotilla_http_request_duration_seconds_bucket",
        "flotilla_actor_restarts_total",
        "flotilla_build_info{version=",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert!(!text.contains("demo-1"), "labels never carry session ids");
    if !require_tool("promtool") {
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
