//! A bounded soak of `hearth serve` on the tiny model (loopback only): a few
//! rounds, each with concurrent greedy streams, mid-stream disconnects,
//! stalled connections (partial headers, a partial body) and oversized
//! prompts all at once. After every round the server is healthy, no
//! sequence runs and every KV block is free, the greedy answers equal the
//! first round's, and (on Linux) its resident memory stays within a bound of
//! the first round's.

mod serve_common;

use serde_json::json;
use serve_common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ROUNDS: usize = 4;
const PROMPTS: [&str; 4] = [
    "once upon a time",
    "the sea is",
    "abc abc abc",
    "hello there",
];
/// Resident memory a later round may add over the first (bytes).
const RSS_SLACK: u64 = 48 << 20;

#[cfg(target_os = "linux")]
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(not(target_os = "linux"))]
fn rss_bytes(_pid: u32) -> Option<u64> {
    None
}

/// Connections that start a request and stall: partial headers, and a body
/// shorter than its Content-Length.
async fn stall(addr: &str) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..12 {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        let head = if i % 4 == 0 {
            "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"model\": \"tiny\", \"prompt\": \"".to_string()
        } else {
            "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_string()
        };
        // The server may already refuse or close it: that is fine too.
        let _ = s.write_all(head.as_bytes()).await;
        held.push(s);
    }
    held
}

async fn greedy_stream(c: &reqwest::Client, server: &Server, prompt: &str) -> String {
    let body = completion_body(prompt, 24, json!({"stream": true, "ignore_eos": true}));
    let resp = post(c, &server.url("/v1/completions"), &body).await;
    let payloads = SseReader::new(resp).rest().await;
    assemble(&payloads, "text_completion", 1).text.remove(0)
}

async fn disconnect_mid_stream(c: &reqwest::Client, server: &Server) {
    let body = completion_body(
        "a long story",
        200,
        json!({"stream": true, "ignore_eos": true}),
    );
    let resp = post(c, &server.url("/v1/completions"), &body).await;
    let mut sse = SseReader::new(resp);
    sse.next().await.expect("a first chunk");
    // Dropping the reader closes the connection mid-stream.
}

async fn oversized(c: &reqwest::Client, server: &Server) {
    let prompt = "x".repeat(300_000);
    let resp = post(
        c,
        &server.url("/v1/completions"),
        &completion_body(&prompt, 4, json!({})),
    )
    .await;
    let e = expect_error(resp, 400).await;
    assert!(e["message"].as_str().unwrap().contains("context"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_leaves_the_server_healthy_idle_and_unchanged() {
    let server = Server::start(&["--max-num-seqs", "8"]);
    let c = client();
    let mut first: Option<Vec<String>> = None;
    let mut base_rss = None;
    for round in 0..ROUNDS {
        let stalled = stall(server.addr()).await;
        let streams =
            futures_util::future::join_all(PROMPTS.iter().map(|p| greedy_stream(&c, &server, p)));
        let (answers, ..) = tokio::join!(
            streams,
            disconnect_mid_stream(&c, &server),
            disconnect_mid_stream(&c, &server),
            oversized(&c, &server),
            oversized(&c, &server),
        );
        drop(stalled);
        let health = c.get(server.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200, "round {round}");
        let metrics = wait_idle(&c, &server).await;
        assert_eq!(metric(&metrics, "hearth_kv_blocks_used"), 0.0);
        match &first {
            None => first = Some(answers),
            Some(f) => assert_eq!(f, &answers, "round {round}: greedy answers changed"),
        }
        if let Some(rss) = rss_bytes(server.pid()) {
            match base_rss {
                None => base_rss = Some(rss),
                Some(b) => assert!(
                    rss <= b + RSS_SLACK,
                    "round {round}: resident memory {} MiB, first round {} MiB",
                    rss >> 20,
                    b >> 20
                ),
            }
        }
    }
}
