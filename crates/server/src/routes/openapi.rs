//! The API description, generated from the handlers' annotations.

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "commerce", description = "Resilient flash-sale commerce service (v1)"),
    paths(
        super::users::sign_up,
        super::users::mint_token,
        super::balance::get_balance,
        super::balance::charge,
        super::health::live,
        super::health::ready,
        super::health::metrics,
        super::coupons::issue,
        super::orders::create,
        super::orders::get,
        super::orders::cancel,
        super::orders::pay,
        super::queue::enter,
        super::queue::poll,
        super::coupons::mine,
        super::products::list,
        super::products::popular,
        super::products::detail,
        super::products::create,
        super::products::update,
        super::admin::create_coupon,
        super::admin::reconcile_coupon,
        super::admin::breakers,
        super::admin::dead_letters,
        super::admin::redrive,
        super::admin::control_breaker,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Admin-Key"))),
        );
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json));
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
