//! The commerce HTTP server: configuration, state, thin handlers.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod json;
pub mod ratelimit;
pub mod routes;
pub mod seams;
pub mod state;
pub mod telemetry;
pub mod tokens;

pub use app::Application;
pub use config::Settings;
