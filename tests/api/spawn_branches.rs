//! A branch name that git would refuse is refused at the API with 422 naming `branch`, one a
//! live session already works on with 409 naming the session, before anything is created
//! (issue 15: not accepted and errored later).

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn branch_names_git_would_refuse_are_422_and_one_in_use_is_409() {
    let app = spawn_app().await;
    for bad in [
        "HEAD",
        ".hidden",
        "feat/.x",
        "refs/heads/x",
        "x.",
        "a..b",
        "main",
    ] {
        let (s, v) = app
            .post(
                "/api/v1/sessions",
                json!({"project": "demo", "prompt": "p", "branch": bad}),
            )
            .await;
        assert_eq!(s, 422, "{bad}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("branch"), "{bad}: {v}");
    }
    let (s, v) = app.get("/api/v1/sessions").await;
    assert_eq!(s, 200);
    assert_eq!(
        v["sessions"].as_array().map(Vec::len),
        Some(0),
        "nothing was created: {v}"
    );

    let first = app
        .spawn(json!({"project": "demo", "prompt": "p", "branch": "feat/shared"}))
        .await;
    app.wait_state(&first, "working").await;
    let (s, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "prompt": "p", "branch": "feat/shared"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&first)),
        "names the session on that branch: {v}"
    );

    // Once that session is gone, its branch may be taken again.
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{first}/kill"), json!({}))
        .await;
    assert!(s < 300, "{v}");
    let second = app
        .spawn(json!({"project": "demo", "prompt": "p", "branch": "feat/shared"}))
        .await;
    app.wait_state(&second, "working").await;
}
