//! Products: the cached product page, the list, the popular board, and the
//! admin create and change.
//!
//! Cached answers say where they came from: `X-Cache: l1|l2|db` (in process,
//! Redis, PostgreSQL), and `X-Cache-Stale: age=<seconds>` when a stale copy
//! stood in because PostgreSQL (and Redis) failed.

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;
use actix_web::{web, HttpResponse, HttpResponseBuilder};
use commerce_catalog::{
    NewProduct, PageRequest, PopularItem, Product, ProductDetail, ProductPage, ProductPatch, Served,
};
use commerce_domain::ProductId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub const CACHE_HEADER: &str = "x-cache";
pub const STALE_HEADER: &str = "x-cache-stale";
/// `redis` or `database`: where the popular board was computed.
pub const POPULAR_SOURCE_HEADER: &str = "x-popular-source";

pub fn configure(cfg: &mut web::ServiceConfig) {
    // `popular` before `{id}`: the first matching route wins, and `{id}`
    // would answer 400 to "popular".
    cfg.route("/api/v1/products", web::get().to(list))
        .route("/api/v1/products/popular", web::get().to(popular))
        .route("/api/v1/products/{id}", web::get().to(detail))
        .route("/admin/products", web::post().to(create))
        .route("/admin/products/{id}", web::patch().to(update));
}

fn product_id(raw: i64) -> Result<ProductId, ApiError> {
    // No product has a non-positive id: such a page does not exist.
    ProductId::parse(raw)
        .map_err(|_| ApiError::new(ErrorCode::ProductNotFound, "product not found"))
}

fn with_provenance<T>(mut res: HttpResponseBuilder, served: &Served<T>) -> HttpResponseBuilder {
    res.insert_header((CACHE_HEADER, served.source.as_str()));
    if let Some(age) = served.stale_age {
        res.insert_header((STALE_HEADER, format!("age={}", age.as_secs())));
    }
    res
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, from 1 (default 1).
    #[param(minimum = 1, maximum = 10_000)]
    page: Option<i64>,
    /// Products per page (default 20); more than 100 is served as 100.
    #[param(minimum = 1)]
    size: Option<i64>,
}

/// Products in id order, a page at a time.
#[utoipa::path(get, path = "/api/v1/products", tag = "products", params(ListQuery), operation_id = "listProducts",
    responses((status = 200, body = ProductPage),
        (status = 422, body = ErrorBody, description = "invalid_page, invalid_size")))]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let req = PageRequest::parse(query.page, query.size)?;
    let page = state.catalog.list(req).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A product page, served from cache (`X-Cache: l1|l2|db`). Changes show
/// within `catalog.l1_ttl_ms` on every instance; stock is at most that stale.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products", params(("id" = i64, Path, minimum = 1)), operation_id = "getProduct",
    responses((status = 200, body = ProductDetail,
        headers(("x-cache" = String, description = "l1, l2 or db"),
            ("x-cache-stale" = String, description = "age=<seconds>, only on a stale copy"))),
        (status = 404, body = ErrorBody, description = "product_not_found"),
        (status = 503, body = ErrorBody, description = "catalog_busy")))]
pub async fn detail(
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = product_id(path.into_inner())?;
    let served = state.catalog.detail(id).await?;
    Ok(with_provenance(HttpResponse::Ok(), &served).json(&*served.value))
}

#[derive(Serialize, ToSchema)]
pub struct PopularBody {
    items: Vec<PopularItem>,
}

/// Top 5 products by units sold over the last three days (UTC), ties by
/// product id. Computed from Redis, or from PostgreSQL while Redis is out.
#[utoipa::path(get, path = "/api/v1/products/popular", tag = "products", operation_id = "popularProducts",
    responses((status = 200, body = PopularBody,
        headers(("x-popular-source" = String, description = "redis or database"),
            ("x-cache-stale" = String, description = "age=<seconds>, only on a stale board"))),
        (status = 503, body = ErrorBody)))]
pub async fn popular(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let served = state.catalog.popular().await?;
    let mut res = with_provenance(HttpResponse::Ok(), &served);
    res.insert_header((POPULAR_SOURCE_HEADER, served.value.origin.as_str()));
    Ok(res.json(PopularBody {
        items: served.value.items.clone(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// Trimmed; no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// Minor units, 0 or more.
    #[schema(minimum = 0, maximum = 100_000_000_000_i64)]
    #[serde(deserialize_with = "crate::json::int")]
    price: i64,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "crate::json::int")]
    stock: i64,
    /// Line breaks and tabs allowed, other control characters not.
    #[schema(max_length = 5000, pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$")]
    description: Option<String>,
}

/// Create a product.
#[utoipa::path(post, path = "/admin/products", tag = "admin", security(("admin" = [])), request_body = CreateProduct, operation_id = "createProduct",
    responses((status = 201, body = Product),
        (status = 422, body = ErrorBody, description = "invalid_name, invalid_description, invalid_price, invalid_stock")))]
pub async fn create(
    _admin: Admin,
    state: web::Data<AppState>,
    body: crate::json::Json<CreateProduct>,
) -> Result<HttpResponse, ApiError> {
    let new = NewProduct::parse(
        &body.name,
        body.description.as_deref(),
        body.price,
        body.stock,
    )?;
    let product = state.catalog.create(&new).await?;
    // The first orders of a product put on sale at once find its gate
    // loaded, instead of each reading its stock from PostgreSQL.
    state
        .orders
        .prime(product.id, i64::from(product.stock))
        .await;
    Ok(HttpResponse::Created().json(product))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeProduct {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    #[serde(default, deserialize_with = "crate::json::present_str")]
    name: Option<String>,
    #[schema(max_length = 5000, pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$")]
    #[serde(default, deserialize_with = "crate::json::present_str")]
    description: Option<String>,
    #[schema(minimum = 0, maximum = 100_000_000_000_i64)]
    #[serde(default, deserialize_with = "crate::json::present_int")]
    price: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "crate::json::present_int")]
    stock: Option<i64>,
}

/// Change some of a product's fields; the change reaches every instance's
/// cache within `catalog.l1_ttl_ms`.
#[utoipa::path(patch, path = "/admin/products/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = ChangeProduct, operation_id = "updateProduct",
    responses((status = 200, body = Product), (status = 404, body = ErrorBody, description = "product_not_found"),
        (status = 422, body = ErrorBody, description = "invalid_name, invalid_description, invalid_price, invalid_stock, empty_patch")))]
pub async fn update(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    body: crate::json::Json<ChangeProduct>,
) -> Result<HttpResponse, ApiError> {
    let id = product_id(path.into_inner())?;
    let patch = ProductPatch::parse(
        body.name.as_deref(),
        body.description.as_deref(),
        body.price,
        body.stock,
    )?;
    let product = state.catalog.update(id, &patch).await?;
    if patch.stock.is_some() {
        // The stock gate counts units: it reloads the new figure.
        state.orders.stock_changed(id).await;
    }
    Ok(HttpResponse::Ok().json(product))
}
