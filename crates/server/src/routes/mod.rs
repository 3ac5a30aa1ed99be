//! Route registration, one module per resource.

pub mod admin;
pub mod balance;
pub mod coupons;
pub mod docs;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod products;
pub mod queue;
pub mod schemas;
pub mod users;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    openapi::configure(cfg);
    docs::configure(cfg);
    users::configure(cfg);
    balance::configure(cfg);
    coupons::configure(cfg);
    products::configure(cfg);
    orders::configure(cfg);
    queue::configure(cfg);
    admin::configure(cfg);
}

/// The methods served on `path`, from the API description (every route is
/// in it, `/openapi.json` and the `/docs` page aside): empty when no route
/// has this path.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    use actix_web::dev::ResourceDef;
    use std::sync::LazyLock;
    use utoipa::OpenApi;
    static ROUTES: LazyLock<Vec<(ResourceDef, Vec<&'static str>)>> = LazyLock::new(|| {
        let mut routes = vec![(ResourceDef::new("/openapi.json"), vec!["GET"])];
        routes.extend(docs::paths().map(|p| (ResourceDef::new(p), vec!["GET"])));
        for (path, item) in openapi::ApiDoc::openapi().paths.paths {
            let methods: Vec<&'static str> = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ]
            .into_iter()
            .filter_map(|(m, served)| served.then_some(m))
            .collect();
            routes.push((ResourceDef::new(path), methods));
        }
        routes
    });
    let mut allowed: Vec<&'static str> = ROUTES
        .iter()
        .filter(|(def, _)| def.is_match(path))
        .flat_map(|(_, methods)| methods.iter().copied())
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    allowed
}
