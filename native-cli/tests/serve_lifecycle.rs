//! Back-pressure and shutdown: a full queue answers 429 with Retry-After;
//! SIGTERM lets running streams finish (or, past the grace period, ends
//! them cleanly), refuses new work, and the process exits 0.

mod serve_common;

use std::time::Instant;

use serde_json::json;
use serve_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gets_429_with_retry_after() {
    // One running sequence and one waiting at most.
    let server = Server::start(&["--max-num-seqs", "1", "--max-queue", "1"]);
    let c = client();
    let url = server.url("/v1/completions");
    let long = |n: usize| {
        completion_body(
            "queue",
            200,
            json!({"stream": true, "ignore_eos": true, "n": n}),
        )
    };

    // Asking for more sequences than the server ever holds is the client's error.
    let e = expect_error(post(&c, &url, &long(3)).await, 400).await;
    assert_eq!(e["param"], "n");

    // Two sequences (one runs, one waits) fill the server; their headers
    // arrive only once the engine has taken them.
    let mut busy = SseReader::new(post(&c, &url, &long(2)).await);
    let resp = post(&c, &url, &completion_body("next", 2, json!({}))).await;
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let e = expect_error(resp, 429).await;
    assert_eq!(e["code"], "queue_full");
    let secs: u64 = retry.expect("Retry-After header").parse().unwrap();
    assert!(secs >= 1);
    assert!(busy.next().await.is_some());

    // Hanging up frees the room: the next request is served.
    drop(busy);
    let t0 = Instant::now();
    loop {
        let resp = post(&c, &url, &completion_body("next", 2, json!({}))).await;
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 429);
        assert!(
            t0.elapsed() < HANG_GUARD,
            "the hung-up request was never cancelled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_idle(&c, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_streams_finish_then_exits_0() {
    let mut server = Server::start(&["--shutdown-grace", "600"]);
    let c = client();
    let alone = run_alone(&server.model_path, "last words", 150, &["--ignore-eos"]);
    let body = completion_body(
        "last words",
        150,
        json!({"stream": true, "ignore_eos": true}),
    );
    let mut sse = SseReader::new(post(&c, &server.url("/v1/completions"), &body).await);
    let mut payloads = vec![sse.next().await.unwrap()];

    server.signal("TERM");
    // New work is refused: the listener is closed (or, racing it, 503).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut refused = false;
    let t0 = Instant::now();
    while !refused {
        match fresh.get(server.url("/health")).send().await {
            Err(_) => refused = true,
            Ok(r) if r.status() == 503 => {
                assert!(r.headers().contains_key("retry-after"));
                refused = true;
            }
            Ok(r) => assert_eq!(r.status(), 200, "before the signal is handled"),
        }
        assert!(
            t0.elapsed() < HANG_GUARD,
            "new requests still served after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The stream in flight still completes in full.
    payloads.extend(sse.rest().await);
    let s = assemble(&payloads, "text_completion", 1);
    assert_eq!(s.text[0], alone["text"].as_str().unwrap());
    assert_eq!(s.finish[0].as_deref(), Some("length"));

    let status = server.wait_exit();
    assert!(status.success(), "exit {status:?}; log:\n{}", server.log());
    assert!(server.log().contains("stopped"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_streams_end_cleanly() {
    let mut server = Server::start(&["--shutdown-grace", "0"]);
    let c = client();
    let body = completion_body(
        "cut short",
        240,
        json!({"stream": true, "ignore_eos": true, "n": 2}),
    );
    let mut sse = SseReader::new(post(&c, &server.url("/v1/completions"), &body).await);
    let mut payloads = vec![sse.next().await.unwrap()];
    server.signal("TERM");
    payloads.extend(sse.rest().await);
    // Every choice ends with a finish_reason, then [DONE]: no broken stream.
    let s = assemble(&payloads, "text_completion", 2);
    for f in &s.finish {
        let f = f.as_deref().expect("a finish_reason per choice");
        assert!(f == "abort" || f == "length", "{f}");
    }
    let status = server.wait_exit();
    assert!(status.success(), "exit {status:?}; log:\n{}", server.log());
}
