//! `hearth serve`: an OpenAI-compatible HTTP server over the
//! continuous-batching scheduler.
//!
//! - [`engine`]: jobs onto the library engine's requests (it runs on a thread of its own)
//! - [`routes`]: axum routes, handlers, the request-counting layer
//! - [`openai`]: request bodies and their validation; [`responses`]: response bodies and SSE chunks
//! - [`embeddings`]: the `/v1/embeddings` handler
//! - [`body`]: size-limited JSON bodies; [`errors`]: OpenAI's error shape
//! - [`metrics`]: Prometheus exposition; [`tokens`]: token bytes for logprobs
//! - [`limits`]: the connection loop (connection cap, header/idle timeouts)
//! - [`access`]: API key, CORS, Host and Content-Type checks
//!
//! Shutdown (SIGTERM or Ctrl-C): stop accepting connections, answer 503 to
//! requests that still arrive, let the requests in flight finish for
//! `--shutdown-grace` seconds, then cancel the rest (streams end with
//! `finish_reason: "abort"` and `[DONE]`) and exit 0.

mod access;
mod body;
mod embeddings;
mod engine;
mod errors;
mod limits;
mod metrics;
mod openai;
mod responses;
mod routes;
mod tokenize;
mod tokens;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use hearth::engine::scheduler::SchedulerOptions;
use tokio::sync::Notify;
use tracing::{info, warn};

use self::engine::{EngineClient, EngineConfig, EngineHandle};
use self::metrics::Metrics;
use self::routes::App;
use crate::hub::name::{classify, ModelSpec};
use crate::load::{load, load_draft, model_path, parse_bytes, ModelArgs};
use crate::spec_args;

/// How long after the grace period the server waits for connections to
/// drain before exiting anyway (a client that stops reading its stream).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (the address is logged).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model id clients send and /v1/models lists (default: the model file's stem).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Sequences that run at once; more wait in the queue.
    #[arg(long, default_value_t = 64)]
    max_num_seqs: usize,
    /// Sequences that may wait beyond --max-num-seqs; requests past that get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Tokens per engine step (decode tokens plus prompt chunks).
    #[arg(long, default_value_t = 256)]
    max_step_tokens: u32,
    /// Largest request body accepted, e.g. 4MiB (larger: 413).
    #[arg(long, default_value = "4MiB")]
    max_body_bytes: String,
    /// Don't share the KV blocks of common prompt prefixes between requests.
    #[arg(long)]
    no_prefix_caching: bool,
    /// Seconds in-flight requests may take to finish after SIGTERM/Ctrl-C.
    #[arg(long, default_value_t = 30.0)]
    shutdown_grace: f64,
    /// Open connections at most; more get 503 and are closed.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Seconds a request head may take to arrive (from its first byte).
    #[arg(long, default_value_t = 10.0)]
    header_timeout_secs: f64,
    /// Seconds a request body may take to arrive (longer: 408).
    #[arg(long, default_value_t = 30.0)]
    body_timeout_secs: f64,
    /// Seconds a connection with no request in flight may stay open silent.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout_secs: f64,
    /// `max_tokens` for chat requests that don't set it (the completions
    /// endpoint keeps OpenAI's 16); less where the context leaves less.
    #[arg(long, default_value_t = 2048)]
    max_tokens_default: usize,
    /// The largest `max_tokens` a request may ask for (more: 400); default: no cap but the context.
    #[arg(long)]
    max_tokens_cap: Option<usize>,
    /// Require `Authorization: Bearer KEY` (except on /health and /metrics).
    #[arg(long, env = "HEARTH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Origins whose browser pages may call the server (CORS), comma-separated; `*`: any.
    #[arg(long, value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Host names accepted besides localhost, 127.0.0.1 and [::1] (checked when bound to loopback,
    /// against DNS rebinding), comma-separated; `*`: any.
    #[arg(long, value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// The default for requests without a `draft` field.
    #[command(flatten)]
    spec: spec_args::SpecArgs,
    /// Pool /v1/embeddings this way (mean, cls or last) instead of as the
    /// model declares; a model that declares none needs it.
    #[arg(long, value_parser = crate::load::parse_pooling)]
    pooling: Option<hearth::PoolingType>,
}

fn secs(v: f64, flag: &str) -> Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0,
        "{flag} must be a positive number of seconds"
    );
    Ok(Duration::from_secs_f64(v))
}

pub fn serve(args: ServeArgs) -> Result<()> {
    anyhow::ensure!(args.max_num_seqs >= 1, "--max-num-seqs must be at least 1");
    anyhow::ensure!(
        args.max_step_tokens >= 1,
        "--max-step-tokens must be at least 1"
    );
    anyhow::ensure!(
        args.shutdown_grace.is_finite() && args.shutdown_grace >= 0.0,
        "--shutdown-grace must be a number of seconds >= 0"
    );
    let max_body_bytes = usize::try_from(parse_bytes(&args.max_body_bytes)?)
        .context("--max-body-bytes is too large")?;
    anyhow::ensure!(max_body_bytes > 0, "--max-body-bytes must be positive");
    anyhow::ensure!(
        args.max_connections >= 1,
        "--max-connections must be at least 1"
    );
    let limits = limits::Limits {
        max_connections: args.max_connections,
        header_timeout: secs(args.header_timeout_secs, "--header-timeout-secs")?,
        idle_timeout: secs(args.idle_timeout_secs, "--idle-timeout-secs")?,
    };
    let body_timeout = secs(args.body_timeout_secs, "--body-timeout-secs")?;
    anyhow::ensure!(
        args.max_tokens_default >= 1,
        "--max-tokens-default must be at least 1"
    );
    if let Some(cap) = args.max_tokens_cap {
        anyhow::ensure!(
            cap >= args.max_tokens_default && cap >= openai::COMPLETIONS_DEFAULT_MAX_TOKENS,
            "--max-tokens-cap must be at least --max-tokens-default ({}) and the completions \
             endpoint's default of {}",
            args.max_tokens_default,
            openai::COMPLETIONS_DEFAULT_MAX_TOKENS
        );
    }
    if let Some(k) = &args.api_key {
        anyhow::ensure!(
            !k.is_empty(),
            "--api-key (HEARTH_API_KEY) must not be empty"
        );
    }
    let path = model_path(args.model.model.as_deref())?;
    // A hub name is what clients will call the model; a file, its stem.
    let hub_name = args.model.model.as_deref().and_then(|m| match classify(m) {
        ModelSpec::Hub(n) => Some(n.to_string()),
        ModelSpec::Local(_) => None,
    });
    let model_id = match args.served_model_name.as_ref().or(hub_name.as_ref()) {
        Some(n) => n.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .context("cannot name the model after its path; pass --served-model-name")?,
    };
    let model_args = ModelArgs {
        model: Some(path),
        ..args.model.clone()
    };
    // A sequence may add two parts to a step (a prompt chunk and generated rows).
    let max_parts = u32::try_from(args.max_num_seqs * 2).context("--max-num-seqs is too large")?;
    let speculative = args.spec.options()?;
    let logit_rows = args.spec.batch_logit_rows(max_parts, args.max_num_seqs);
    let mut h = load(
        &model_args,
        args.max_step_tokens,
        max_parts,
        logit_rows,
        false,
    )?;
    load_draft(&mut h, &model_args, &args.spec, false)?;
    info!(
        "KV cache: {} blocks of {} tokens; up to {} sequences run at once, {} more may wait",
        h.model.kv_blocks(),
        h.model.kv_block_size(),
        args.max_num_seqs,
        args.max_queue
    );
    let metrics = Arc::new(Metrics::new());
    let engine = EngineHandle::spawn(
        h,
        EngineConfig {
            max_num_seqs: args.max_num_seqs,
            max_queue: args.max_queue,
            scheduler: SchedulerOptions {
                prefix_caching: !args.no_prefix_caching,
                ..SchedulerOptions::default()
            },
            speculative,
            pooling: args.pooling,
        },
        metrics.clone(),
    )
    .context("starting the engine thread")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hearth-http")
        .build()
        .context("starting the async runtime")?;
    let app = Arc::new(App::new(
        engine.client(),
        metrics,
        model_id,
        routes::Settings {
            max_body_bytes,
            body_timeout,
            max_tokens_default: args.max_tokens_default,
            max_tokens_cap: args.max_tokens_cap,
            // Requests holding the engine, each counted by its choices: the
            // engine's own limit, so that nothing waits on its command queue
            // beyond what it can take.
            max_sequences: args.max_num_seqs + args.max_queue,
        },
    ));
    let result = rt.block_on(run_http(&args, app, limits));
    // Whatever happened to the listener, stop the engine cleanly.
    engine.shutdown();
    rt.shutdown_timeout(Duration::from_secs(1));
    result?;
    info!("hearth serve: stopped");
    Ok(())
}

async fn run_http(args: &ServeArgs, app: Arc<App>, limits: limits::Limits) -> Result<()> {
    // Signal handlers first, so that a signal sent as soon as the address is
    // logged already means "shut down gracefully".
    let signals = Signals::new()?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    info!(
        "hearth serve: model `{}` at http://{addr}/v1 (POST /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics)",
        app.model_id
    );
    let grace = Duration::from_secs_f64(args.shutdown_grace);
    let started = Arc::new(Notify::new());
    let on_signal = {
        let app = app.clone();
        let started = started.clone();
        async move {
            signals.recv().await;
            app.shutting_down.store(true, Ordering::SeqCst);
            info!(
                "shutting down: no new connections; requests in flight have {:.1} s to finish",
                grace.as_secs_f64()
            );
            started.notify_one();
            tokio::spawn(cancel_after(grace, app.engine.clone()));
        }
    };
    let access = access::Access::new(
        addr,
        args.api_key.clone(),
        &args.allowed_origins,
        &args.allowed_hosts,
    );
    if access.host_check() {
        info!("bound to loopback: requests must name it in their Host header (--allowed-hosts adds names)");
    }
    if args.api_key.is_some() {
        info!("API key required (Authorization: Bearer ...), except on /health and /metrics");
    }
    let server = limits::serve(
        listener,
        routes::router(app, Arc::new(access)),
        limits,
        on_signal,
    );
    tokio::select! {
        _ = server => {},
        _ = async {
            started.notified().await;
            tokio::time::sleep(grace + DRAIN_TIMEOUT).await;
        } => warn!("connections still open {} s after the grace period; exiting anyway", DRAIN_TIMEOUT.as_secs()),
    }
    Ok(())
}

async fn cancel_after(grace: Duration, engine: EngineClient) {
    tokio::time::sleep(grace).await;
    info!("grace period over: cancelling the requests still running");
    engine.cancel_all();
}

/// SIGTERM and SIGINT (Ctrl-C), registered when created.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
