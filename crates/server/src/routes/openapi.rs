//! The API description, generated from the handlers' annotations, then
//! completed in one place with what every operation of a kind can answer
//! (authentication, body and path parsing, idempotency keys, rate limits,
//! the database's 503s with `Retry-After`) and the links between operations.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorCode;

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
    components(schemas(crate::error::ErrorBody, crate::error::ErrorCode, super::schemas::BreakerName, super::schemas::BreakerAction)),
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
                    .description(Some(
                        "A signed token with the user id and an expiry (sign-up answers one).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Admin-Key"))),
        );
    }
}

/// Operations limited per user (429 `rate_limited`).
const RATE_LIMITED: &[&str] = &[
    "charge",
    "payOrder",
    "createOrder",
    "cancelOrder",
    "issueCoupon",
    "enterQueue",
];

/// Operations that answer without PostgreSQL or Redis (no 503).
const NO_DEPENDENCY: &[&str] = &["live", "metrics"];

/// The description as served: generated, then completed.
pub fn spec() -> &'static Value {
    static SPEC: LazyLock<Value> = LazyLock::new(|| {
        let mut spec = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
        complete(&mut spec);
        spec
    });
    &SPEC
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    })
}

fn retry_after() -> Value {
    json!({
        "description": "Seconds to wait before retrying.",
        "required": true,
        "schema": { "type": "integer", "minimum": 1 }
    })
}

/// The snake_case words of a description (the codes it names, among
/// field names such as `opens_at`).
fn snake_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .filter(|w| w.contains('_'))
}

/// Adds `code` (and a note on it) to the response of its status, declaring
/// that response when the operation did not.
fn add(responses: &mut Map<String, Value>, code: ErrorCode, note: Option<&str>) {
    let status = code.status().as_u16().to_string();
    let text = match note {
        Some(note) => format!("{code} ({note})"),
        None => code.to_string(),
    };
    match responses.get_mut(&status) {
        Some(existing) => {
            let old = existing["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !snake_words(&old).any(|w| w == code.as_str()) {
                existing["description"] = Value::String(if old.is_empty() {
                    text
                } else {
                    format!("{old}, {text}")
                });
            }
        }
        None => {
            responses.insert(status, error_response(&text));
        }
    }
}

fn complete(spec: &mut Value) {
    spec["openapi"] = json!("3.1.0");
    spec["info"]["version"] = json!("1");
    let Some(paths) = spec["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (_method, op) in item.iter_mut() {
            complete_operation(path, op);
        }
    }
    // A change must change something.
    spec["components"]["schemas"]["ChangeProduct"]["minProperties"] = json!(1);
    for field in ["name", "description", "price", "stock"] {
        let schema = &mut spec["components"]["schemas"]["ChangeProduct"]["properties"][field];
        // `null` is "not given": the change needs one field that is not.
        if let Some(types) = schema["type"].as_array() {
            let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            schema["type"] = kept.first().cloned().unwrap_or(Value::Null);
        }
    }
    add_links(spec);
}

fn complete_operation(path: &str, op: &mut Value) {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let security = op.get("security").cloned().unwrap_or(Value::Null);
    let secured_by = |scheme: &str| {
        security
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get(scheme).is_some()))
    };
    let (bearer, admin) = (secured_by("bearer"), secured_by("admin"));
    let has_body = op.get("requestBody").is_some();
    let params = op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let int_path = params
        .iter()
        .any(|p| p["in"] == "path" && p["schema"]["type"] == "integer");
    let has_query = params.iter().any(|p| p["in"] == "query");
    let key = params.iter().find(|p| p["name"] == "Idempotency-Key");
    let idempotent = key.is_some();
    let key_required = key.is_some_and(|p| p["required"] == true);
    if let Some(list) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in list.iter_mut() {
            if p["name"] == "Idempotency-Key" {
                p["description"] = json!(if p["required"] == true {
                    "Required: a new unique value (a UUID, say) per intended request, the same one on its retries, which replay the first answer; the same key with another body is 422."
                } else {
                    "Makes retries safe: the same key replays the first answer; with another body, 422."
                });
                p["schema"] = json!({ "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]{1,255}$" });
            }
        }
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    if bearer {
        add(responses, ErrorCode::MissingToken, None);
        add(responses, ErrorCode::InvalidToken, None);
        add(responses, ErrorCode::TokenExpired, None);
        add(
            responses,
            ErrorCode::UnknownUser,
            Some("the token's user does not exist"),
        );
    }
    if admin {
        add(responses, ErrorCode::MissingAdminKey, None);
        add(responses, ErrorCode::InvalidAdminKey, None);
    }
    if has_body {
        add(responses, ErrorCode::MalformedJson, None);
        add(responses, ErrorCode::PayloadTooLarge, None);
        add(responses, ErrorCode::UnsupportedMediaType, None);
        add(responses, ErrorCode::InvalidBody, None);
    }
    if int_path {
        add(responses, ErrorCode::InvalidPath, None);
    }
    if has_query {
        add(responses, ErrorCode::InvalidQuery, None);
    }
    if idempotent {
        add(responses, ErrorCode::InvalidIdempotencyKey, None);
        if key_required {
            add(responses, ErrorCode::IdempotencyKeyRequired, None);
        }
        add(
            responses,
            ErrorCode::RequestInProgress,
            Some("the same key is being answered; with Retry-After"),
        );
        add(responses, ErrorCode::IdempotencyKeyMismatch, None);
    }
    if RATE_LIMITED.contains(&id.as_str()) {
        add(responses, ErrorCode::RateLimited, None);
    }
    if !NO_DEPENDENCY.contains(&id.as_str()) && path != "/health/ready" {
        add(responses, ErrorCode::DbBusy, None);
        add(responses, ErrorCode::DbTimeout, None);
        add(responses, ErrorCode::DbConflict, None);
        add(
            responses,
            ErrorCode::DbUnavailable,
            Some("and the dependency's own busy codes"),
        );
    }
    for (status, response) in responses.iter_mut() {
        if response.get("description").and_then(Value::as_str) == Some("") {
            response["description"] = json!(if status.starts_with('2') {
                "Success."
            } else {
                "Error."
            });
        }
        if matches!(status.as_str(), "429" | "503") || (status == "409" && idempotent) {
            let headers = response
                .as_object_mut()
                .map(|r| r.entry("headers").or_insert_with(|| json!({})));
            if let Some(h) = headers {
                if status == "409" {
                    h["Retry-After"] = json!({
                        "description": format!("Seconds to wait, on {}.", ErrorCode::RequestInProgress),
                        "schema": { "type": "integer", "minimum": 1 }
                    });
                } else {
                    h["Retry-After"] = retry_after();
                }
            }
        }
    }
}

/// Links for the stateful phase of API fuzzers and for readers: what a
/// created resource's id feeds.
fn add_links(spec: &mut Value) {
    /// Link name, target operation, the response field that feeds it.
    type Targets = &'static [(&'static str, &'static str, &'static str)];
    let links: &[(&str, &str, &str, Targets)] = &[
        (
            "/api/v1/orders",
            "post",
            "201",
            &[
                ("GetOrder", "getOrder", "id"),
                ("CancelOrder", "cancelOrder", "id"),
                ("PayOrder", "payOrder", "id"),
            ],
        ),
        (
            "/admin/products",
            "post",
            "201",
            &[
                ("GetProduct", "getProduct", "id"),
                ("UpdateProduct", "updateProduct", "id"),
            ],
        ),
        (
            "/admin/coupons",
            "post",
            "201",
            &[
                ("IssueCoupon", "issueCoupon", "id"),
                ("ReconcileCoupon", "reconcileCoupon", "id"),
            ],
        ),
        (
            "/api/v1/queue/tokens",
            "post",
            "201",
            &[("PollQueueToken", "pollQueueToken", "token")],
        ),
    ];
    for (path, method, status, targets) in links {
        let Some(response) = spec
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('~', "~0").replace('/', "~1")
            ))
            .filter(|r| r.is_object())
        else {
            continue;
        };
        let mut map = Map::new();
        for (name, operation, field) in *targets {
            let param = if *field == "token" { "token" } else { "id" };
            map.insert(
                (*name).to_owned(),
                json!({
                    "operationId": operation,
                    "parameters": { param: format!("$response.body#/{field}") }
                }),
            );
        }
        response["links"] = Value::Object(map);
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json));
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique_and_page_size_are_query() {
        let spec = spec();
        let mut seen = std::collections::HashSet::new();
        for (_, item) in spec["paths"].as_object().into_iter().flatten() {
            for (_, op) in item.as_object().into_iter().flatten() {
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(!id.is_empty() && seen.insert(id.to_owned()), "{id}");
            }
        }
        let params = spec["paths"]["/api/v1/products"]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(params.len(), 2);
        assert!(params.iter().all(|p| p["in"] == "query"));
    }

    #[test]
    fn every_operation_lists_what_it_can_answer() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let id = op["operationId"].as_str().unwrap_or_default();
                let responses = &op["responses"];
                let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
                if secured {
                    assert!(responses["401"].is_object(), "{method} {path}: 401");
                }
                if op.get("requestBody").is_some() {
                    for status in ["400", "413", "415", "422"] {
                        assert!(responses[status].is_object(), "{method} {path}: {status}");
                    }
                }
                if !NO_DEPENDENCY.contains(&id) {
                    assert!(
                        responses["503"]["headers"]["Retry-After"].is_object(),
                        "{method} {path}: 503 with Retry-After"
                    );
                }
                if RATE_LIMITED.contains(&id) {
                    assert!(
                        responses["429"]["headers"]["Retry-After"].is_object(),
                        "{method} {path}: 429 with Retry-After"
                    );
                }
                for (status, r) in responses.as_object().into_iter().flatten() {
                    assert!(
                        r["content"].is_object(),
                        "{method} {path} {status}: declares its content"
                    );
                }
            }
        }
        // The admin key is a security scheme, not a parameter.
        let mint = &spec["paths"]["/api/v1/auth/token"]["post"];
        assert!(mint.get("parameters").is_none(), "{mint}");
        assert_eq!(mint["security"][0]["admin"], json!([]));
    }

    /// The description's codes are the enum's: `ErrorBody.code` lists them
    /// all, and every code an error response names has that status.
    #[test]
    fn error_codes_come_from_the_enum() {
        let spec = spec();
        let listed: Vec<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, all);
        assert_eq!(
            spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
        // Field names a description may mention besides codes.
        const FIELDS: &[&str] = &["opens_at"];
        let mut named = std::collections::HashSet::new();
        for (path, item) in spec["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                for (status, r) in op["responses"].as_object().into_iter().flatten() {
                    if !(status.starts_with('4') || status.starts_with('5')) {
                        continue;
                    }
                    let text = r["description"].as_str().unwrap_or_default();
                    for word in snake_words(text).filter(|w| !FIELDS.contains(w)) {
                        let code = ErrorCode::ALL.iter().find(|c| c.as_str() == word);
                        let code = code.unwrap_or_else(|| {
                            panic!("{method} {path} {status}: {word} is not an ErrorCode")
                        });
                        assert_eq!(
                            code.status().as_str(),
                            status,
                            "{method} {path}: {word} is answered with another status"
                        );
                        named.insert(*code);
                    }
                }
            }
        }
        // The renamed codes are where clients will look for them.
        for code in [ErrorCode::CouponExpired, ErrorCode::OrderExpired] {
            assert!(named.contains(&code), "{code} is in no operation");
        }
    }
}
