//! The admin HTTP endpoint (loopback by default):
//! - `/healthz`: 200 while the process runs;
//! - `/readyz`: 200 once the config directory was loaded, 503 before;
//! - `/metrics`: Prometheus text;
//! - `/debug/proxies`: every connected proxy and where each resource stands;
//! - `/debug/config`: the problems of the loaded config;
//! - `/modules/<filter>.wasm`: the filters' code, for `remote` module sources.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::cache::Render;
use super::ecds::Shared;

pub fn router<R: Render>(shared: Arc<Shared<R>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<R>))
        .route("/metrics", get(metrics::<R>))
        .route("/debug/proxies", get(proxies::<R>))
        .route("/debug/config", get(config::<R>))
        .route("/modules/{file}", get(module::<R>))
        .with_state(shared)
}

async fn readyz<R: Render>(State(shared): State<Arc<Shared<R>>>) -> Response {
    if shared.metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "config not loaded yet\n").into_response()
    }
}

async fn metrics<R: Render>(State(shared): State<Arc<Shared<R>>>) -> Response {
    let text = shared.metrics.render(&shared.registry);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn proxies<R: Render>(State(shared): State<Arc<Shared<R>>>) -> Response {
    Json(shared.registry.proxies()).into_response()
}

async fn config<R: Render>(State(shared): State<Arc<Shared<R>>>) -> Response {
    let generation = shared.generation.borrow().id;
    Json(json!({
        "ready": shared.metrics.ready.load(Ordering::Relaxed),
        "generation": generation,
        "problems": shared.metrics.problems(),
    }))
    .into_response()
}

async fn module<R: Render>(State(shared): State<Arc<Shared<R>>>, Path(file): Path<String>) -> Response {
    match shared.cache.modules().file(&file) {
        Some(module) => (
            [(header::CONTENT_TYPE, "application/wasm".to_owned()), (header::ETAG, format!("\"{}\"", module.sha256))],
            module.bytes.as_ref().clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no module {file}\n")).into_response(),
    }
}
