//! A fake external HTTP peer (the data platform, a webhook) that tests can
//! make fail or slow down, and that records what it received.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// Answer with this status.
    Fail(u16),
    /// Answer 200 after this delay.
    Delay(Duration),
}

#[derive(Default)]
struct Shared {
    mode: Option<Mode>,
    /// Accepted requests by `Idempotency-Key`.
    accepted: HashMap<String, usize>,
    /// Accepted `Idempotency-Key`s in the order they came, repeats too.
    arrivals: Vec<String>,
    requests: usize,
}

impl Shared {
    fn accept(&mut self, key: String) {
        *self.accepted.entry(key.clone()).or_default() += 1;
        self.arrivals.push(key);
    }
}

pub struct FakePeer {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(req: HttpRequest, shared: web::Data<Mutex<Shared>>) -> HttpResponse {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mode = {
        let mut s = shared.lock().expect("lock");
        s.requests += 1;
        s.mode.unwrap_or(Mode::Ok)
    };
    match mode {
        Mode::Fail(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
                .finish()
        }
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            shared.lock().expect("lock").accept(key);
            HttpResponse::Ok().finish()
        }
        // A health check (HEAD) is answered as the mode says, not recorded.
        Mode::Ok if req.method() == actix_web::http::Method::HEAD => HttpResponse::Ok().finish(),
        Mode::Ok => {
            shared.lock().expect("lock").accept(key);
            HttpResponse::Ok().finish()
        }
    }
}

impl FakePeer {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind fake peer");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/events"),
            shared,
            handle,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock().expect("lock").mode = Some(mode);
    }

    /// Distinct events accepted.
    pub fn distinct(&self) -> usize {
        self.shared.lock().expect("lock").accepted.len()
    }

    /// Accepted deliveries, duplicates included.
    pub fn accepted(&self) -> usize {
        self.shared.lock().expect("lock").accepted.values().sum()
    }

    /// Accepted `Idempotency-Key`s (event ids) in the order they came,
    /// repeats included.
    pub fn arrivals(&self) -> Vec<String> {
        self.shared.lock().expect("lock").arrivals.clone()
    }

    /// Every request, failed ones included.
    pub fn requests(&self) -> usize {
        self.shared.lock().expect("lock").requests
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        drop(tokio::spawn(async move { handle.stop(false).await }));
    }
}
