//! `GET /api/v1/openapi.json`, generated from the handlers' `#[utoipa::path]` annotations.

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
pub async fn spec() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
