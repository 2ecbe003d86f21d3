//! `/metrics` in Prometheus' text format: request counts by endpoint and
//! status, token counters, time-to-first-token and inter-token latency
//! histograms (observed by the engine thread), and the engine's state
//! (sequences, KV blocks, prefix-cache hit rate, preemptions) read from the
//! snapshot the engine publishes after every step.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::engine::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

pub struct Metrics {
    /// Encoding and the counter catch-up below must not interleave between scrapes.
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    running: Gauge,
    waiting: Gauge,
    kv_used: Gauge,
    kv_free: Gauge,
    kv_cached: Gauge,
    kv_total: Gauge,
    prefix_hit_rate: Gauge<f64, AtomicU64>,
    prefix_query_tokens: Counter,
    prefix_hit_tokens: Counter,
    prefix_evictions: Counter,
    preemptions: Counter,
    pub spec_drafted: Counter,
    pub spec_accepted: Counter,
    spec_acceptance: Gauge<f64, AtomicU64>,
}

/// Moves a counter up to a running total the engine keeps.
fn catch_up(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("hearth");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            // 1 ms .. ~65 s.
            ttft: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 0.5 ms .. ~16 s.
            itl: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 10 ms .. ~10 min.
            e2e: Histogram::new(exponential_buckets(0.01, 2.0, 17)),
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_used: Gauge::default(),
            kv_free: Gauge::default(),
            kv_cached: Gauge::default(),
            kv_total: Gauge::default(),
            prefix_hit_rate: Gauge::default(),
            prefix_query_tokens: Counter::default(),
            prefix_hit_tokens: Counter::default(),
            prefix_evictions: Counter::default(),
            preemptions: Counter::default(),
            spec_drafted: Counter::default(),
            spec_accepted: Counter::default(),
            spec_acceptance: Gauge::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests by endpoint and status code",
            m.requests.clone(),
        );
        r.register(
            "prompt_tokens",
            "Prompt tokens of admitted requests",
            m.prompt_tokens.clone(),
        );
        r.register(
            "generation_tokens",
            "Tokens generated",
            m.generation_tokens.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "From a request's arrival to each of its sequences' first token",
            m.ttft.clone(),
        );
        r.register(
            "inter_token_latency_seconds",
            "Between consecutive tokens of one sequence",
            m.itl.clone(),
        );
        r.register(
            "request_duration_seconds",
            "From a completion request's arrival to its last token",
            m.e2e.clone(),
        );
        r.register(
            "running_sequences",
            "Sequences admitted to the batch",
            m.running.clone(),
        );
        r.register(
            "waiting_sequences",
            "Sequences queued for admission (new or preempted)",
            m.waiting.clone(),
        );
        r.register(
            "kv_blocks_used",
            "KV cache blocks referenced by sequences",
            m.kv_used.clone(),
        );
        r.register(
            "kv_blocks_free",
            "KV cache blocks an allocation can take",
            m.kv_free.clone(),
        );
        r.register(
            "kv_blocks_cached",
            "KV cache blocks held by the prefix cache (referenced or not)",
            m.kv_cached.clone(),
        );
        r.register(
            "kv_blocks_total",
            "KV cache blocks in the pool",
            m.kv_total.clone(),
        );
        r.register(
            "prefix_cache_hit_rate",
            "Prompt tokens found in the prefix cache / prompt tokens looked up",
            m.prefix_hit_rate.clone(),
        );
        r.register(
            "prefix_cache_query_tokens",
            "Prompt tokens looked up in the prefix cache",
            m.prefix_query_tokens.clone(),
        );
        r.register(
            "prefix_cache_hit_tokens",
            "Prompt tokens found in the prefix cache",
            m.prefix_hit_tokens.clone(),
        );
        r.register(
            "prefix_cache_evictions",
            "Cached KV blocks dropped to make room",
            m.prefix_evictions.clone(),
        );
        r.register(
            "preemptions",
            "Sequences preempted (KV blocks freed, recomputed later)",
            m.preemptions.clone(),
        );
        r.register(
            "spec_draft_tokens",
            "Tokens drafted for speculative decoding (finished sequences)",
            m.spec_drafted.clone(),
        );
        r.register(
            "spec_accepted_tokens",
            "Drafted tokens the model confirmed (finished sequences)",
            m.spec_accepted.clone(),
        );
        r.register(
            "spec_acceptance_rate",
            "Accepted / drafted tokens so far (0 before any draft)",
            m.spec_acceptance.clone(),
        );
        *m.registry.lock().expect("fresh mutex") = r;
        m
    }

    /// The text exposition, with the engine's state as of `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        self.running.set(snap.running as i64);
        self.waiting.set(snap.waiting as i64);
        self.kv_used.set(snap.kv_used as i64);
        self.kv_free.set(snap.kv_free as i64);
        self.kv_cached.set(snap.kv_cached as i64);
        self.kv_total.set(snap.kv_total as i64);
        let rate = if snap.prefix_query_tokens > 0 {
            snap.prefix_hit_tokens as f64 / snap.prefix_query_tokens as f64
        } else {
            0.0
        };
        self.prefix_hit_rate.set(rate);
        catch_up(&self.prefix_query_tokens, snap.prefix_query_tokens);
        catch_up(&self.prefix_hit_tokens, snap.prefix_hit_tokens);
        catch_up(&self.prefix_evictions, snap.prefix_evictions);
        catch_up(&self.preemptions, snap.preemptions);
        let drafted = self.spec_drafted.get();
        self.spec_acceptance.set(if drafted > 0 {
            self.spec_accepted.get() as f64 / drafted as f64
        } else {
            0.0
        });
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
