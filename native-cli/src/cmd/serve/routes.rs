//! The HTTP surface: routes, the completion handlers, and the layer that
//! counts and logs every request.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{stream, StreamExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::{debug, info};

use super::access::{self, Access};
use super::body::read_json;
use super::engine::EngineClient;
use super::errors::ApiError;
use super::metrics::{Metrics, RequestLabels};
use super::openai::{validate, Endpoint, RequestBody};
use super::responses::{collect, Meta, Streamer};

pub struct App {
    pub engine: EngineClient,
    pub metrics: Arc<Metrics>,
    pub model_id: String,
    /// When the model was loaded (Unix seconds), for `/v1/models`.
    pub created: u64,
    pub settings: Settings,
    pub shutting_down: AtomicBool,
    /// One permit per sequence the engine may hold: a request takes its
    /// choices' worth before it is sent to the engine, and keeps them until
    /// its response ends, so the engine's command queue never holds more
    /// than the engine would take (more: 429 here).
    pub(super) admission: Arc<Semaphore>,
    next_id: AtomicU64,
}

/// The handlers' limits.
pub struct Settings {
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// `max_tokens` for a chat request without one (less where the context leaves less).
    pub max_tokens_default: usize,
    /// The largest `max_tokens` accepted.
    pub max_tokens_cap: Option<usize>,
    /// `--max-num-seqs + --max-queue`.
    pub max_sequences: usize,
}

impl App {
    pub fn new(
        engine: EngineClient,
        metrics: Arc<Metrics>,
        model_id: String,
        settings: Settings,
    ) -> App {
        App {
            engine,
            metrics,
            model_id,
            created: unix_now(),
            admission: Arc::new(Semaphore::new(settings.max_sequences)),
            settings,
            shutting_down: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
        }
    }
}

impl App {
    /// `shutting_down` once SIGTERM/Ctrl-C has started the shutdown.
    pub fn check_open(&self) -> Result<(), ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::shutting_down());
        }
        Ok(())
    }

    /// `model_not_found` unless `model` is the id this server serves.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model != self.model_id {
            return Err(ApiError::model_not_found(model, &self.model_id));
        }
        Ok(())
    }

    /// The request's JSON body, within `--max-body-bytes` and the body timeout.
    pub async fn read_body<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<T, ApiError> {
        let s = &self.settings;
        tokio::time::timeout(s.body_timeout, read_json(headers, body, s.max_body_bytes))
            .await
            .map_err(|_| ApiError::body_timeout(s.body_timeout.as_secs_f64()))?
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The paths metrics are labelled with; anything else counts as `other`,
/// so that random paths cannot grow the label set.
const ENDPOINTS: [&str; 8] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/tokenize",
    "/detokenize",
    "/health",
    "/metrics",
];

pub fn router(app: Arc<App>, access: Arc<Access>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(super::embeddings::embeddings))
        .route("/v1/models", get(list_models))
        .route("/tokenize", post(super::tokenize::tokenize))
        .route("/detokenize", post(super::tokenize::detokenize))
        .route("/v1/models/{*id}", get(get_model))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(access, access::check))
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Counts every request by endpoint and status and logs it: errors at
/// info with their message (completions log their own line when done).
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    let endpoint = ENDPOINTS.iter().find(|e| **e == path).copied().unwrap_or(
        if path.starts_with("/v1/models/") {
            "/v1/models/{id}"
        } else {
            "other"
        },
    );
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint: endpoint.to_string(),
            status: status.as_u16().to_string(),
        })
        .inc();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    match resp.extensions().get::<ApiError>() {
        Some(e) => info!(
            "{method} {path} -> {} in {ms:.1} ms: {}",
            status.as_u16(),
            e.message
        ),
        None => debug!("{method} {path} -> {} in {ms:.1} ms", status.as_u16()),
    }
    resp
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

fn model_card(app: &App) -> serde_json::Value {
    json!({
        "id": app.model_id,
        "object": "model",
        "created": app.created,
        "owned_by": "hearth",
        "max_model_len": app.engine.context_length,
        "context_length": app.engine.context_length,
    })
}

async fn list_models(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({"object": "list", "data": [model_card(&app)]}))
}

async fn get_model(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    app.check_model(&id)?;
    Ok(Json(model_card(&app)))
}

async fn health(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    app.check_open()?;
    if !app.engine.is_alive() {
        return Err(ApiError::internal("The inference engine has stopped."));
    }
    Ok(Json(json!({"status": "ok"})))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(&app.engine.snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn chat_completions(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    complete(app, Endpoint::Chat, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    complete(app, Endpoint::Completions, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn complete(
    app: Arc<App>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    app.check_open()?;
    let settings = &app.settings;
    let req: RequestBody = app.read_body(&headers, body).await?;
    app.check_model(&req.model)?;
    let mut job = validate(req, endpoint)?;
    if let (Some(m), Some(cap)) = (job.max_tokens, settings.max_tokens_cap) {
        if m > cap {
            return Err(ApiError::invalid_param(
                "max_tokens",
                format!(
                    "`max_tokens` is {m}, more than this server allows ({cap}, --max-tokens-cap)."
                ),
            ));
        }
    }
    let defaulted = job.max_tokens.is_none();
    if defaulted {
        job.max_tokens = Some(settings.max_tokens_default);
    }
    // Held until the response ends (dropped with `events` or the stream).
    let permit = app
        .admission
        .clone()
        .try_acquire_many_owned(job.choices().min(settings.max_sequences) as u32)
        .map_err(|_| {
            ApiError::queue_full(format!(
                "The server is busy: {} sequences are running or queued; retry later \
                 (--max-num-seqs + --max-queue).",
                settings.max_sequences
            ))
        })?;
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    let id = format!(
        "{prefix}-{:x}{:06x}",
        app.created,
        app.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let (stream, choices, include_usage, logprobs) = (
        job.stream,
        job.choices(),
        job.include_usage,
        job.logprobs.is_some(),
    );
    let tools = job.tools.active().then_some(app.engine.tool_format);
    let (admitted, events) = match app.engine.submit(id.clone(), job.clone(), arrived).await {
        // The default does not fit beside this prompt: as many as the context
        // leaves, which is fewer.
        Err(e) if defaulted && e.code == Some("context_length_exceeded") => {
            job.max_tokens = None;
            app.engine.submit(id.clone(), job, arrived).await?
        }
        r => r?,
    };
    let meta = Meta {
        endpoint,
        id,
        created: unix_now(),
        model: app.model_id.clone(),
        choices,
        admitted,
        include_usage,
        logprobs,
        tools,
    };
    if !stream {
        let out = collect(&meta, events).await?;
        drop(permit);
        return Ok(Json(out).into_response());
    }
    let streamer = Streamer::new(meta);
    let opening = streamer.start();
    // Dropping this stream (the client went away) drops `events`, which the
    // engine notices and cancels the request.
    let body = stream::unfold(Some((events, streamer)), |state| async move {
        let (mut events, mut s) = state?;
        if s.ended() {
            return None;
        }
        match events.recv().await {
            Some(ev) => {
                let out = s.on_event(ev);
                Some((out, Some((events, s))))
            }
            None => Some((s.on_close(), None)),
        }
    });
    let body = body.map(move |batch| {
        let _ = &permit;
        batch
    });
    let payloads = stream::iter([opening]).chain(body).flat_map(|batch| {
        stream::iter(
            batch
                .into_iter()
                .map(|d| Ok::<_, Infallible>(SseEvent::default().data(d))),
        )
    });
    Ok(Sse::new(payloads)
        .keep_alive(KeepAlive::default())
        .into_response())
}
