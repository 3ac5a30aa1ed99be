//! Route registration, one module per resource.

pub mod admin;
pub mod balance;
pub mod coupons;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod products;
pub mod queue;
pub mod users;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    openapi::configure(cfg);
    users::configure(cfg);
    balance::configure(cfg);
    coupons::configure(cfg);
    products::configure(cfg);
    orders::configure(cfg);
    queue::configure(cfg);
    admin::configure(cfg);
}
