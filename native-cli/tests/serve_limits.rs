//! Slow and idle clients cannot hold the server's sockets and memory: heads
//! that never finish, bodies that stall and idle keep-alive connections are
//! closed after their timeouts, connections past `--max-connections` are
//! refused with a 503, and a stream slower than every timeout still ends
//! whole. The waits are hang guards only: the timeouts are 1 s and a
//! connection must be closed well within the guard.

mod serve_common;

use std::time::Duration;

use serde_json::{json, Value};
use serve_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection the server must close gets this long (far beyond its 1 s timeouts).
const CLOSE_GUARD: Duration = Duration::from_secs(60);

/// Reads until the server closes the connection; what it sent.
async fn read_until_closed(s: &mut TcpStream, what: &str) -> String {
    let mut out = Vec::new();
    match tokio::time::timeout(CLOSE_GUARD, s.read_to_end(&mut out)).await {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => panic!("{what}: the server kept the connection open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let server = Server::start(&[
        "--header-timeout-secs",
        "1",
        "--body-timeout-secs",
        "1",
        "--idle-timeout-secs",
        "1",
    ]);
    let addr = server.addr().to_string();

    // 200 connections that send part of a head and stall.
    let mut partial = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            .await
            .unwrap();
        partial.push(s);
    }
    let closers = partial
        .into_iter()
        .map(|mut s| tokio::spawn(async move { read_until_closed(&mut s, "partial head").await }));
    for c in closers {
        c.await.unwrap();
    }

    // A body announced at 4 MiB - 1 that stalls: 408, then closed.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{{\"model\": \"tiny\", \"prompt\": \"",
        4 * 1024 * 1024 - 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'a'; 64 * 1024]).await.unwrap();
    let answer = read_until_closed(&mut s, "stalled body").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A kept-alive connection left idle after its response.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let get = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(get.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut s, "idle keep-alive").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A stream whose reader pauses longer than every timeout ends whole.
    let c = client();
    let body = completion_body("steady", 200, json!({"stream": true, "ignore_eos": true}));
    let mut sse = SseReader::new(post(&c, &server.url("/v1/completions"), &body).await);
    let mut payloads = vec![sse.next().await.expect("first chunk")];
    tokio::time::sleep(Duration::from_millis(2500)).await;
    payloads.extend(sse.rest().await);
    let s = assemble(&payloads, "text_completion", 1);
    assert_eq!(s.finish[0].as_deref(), Some("length"));

    // A non-streamed request on a fresh connection still works.
    let ok = post(
        &c,
        &server.url("/v1/completions"),
        &completion_body("a", 2, json!({})),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused() {
    let server = Server::start(&["--max-connections", "4", "--header-timeout-secs", "600"]);
    let addr = server.addr().to_string();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127")
            .await
            .unwrap();
        held.push(s);
    }
    // The server takes the four before the fifth (accepted in order).
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let get = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(get.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut s, "over the cap").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");

    // Once they go, the server serves again.
    drop(held);
    let c = client();
    let t0 = std::time::Instant::now();
    loop {
        match c.get(server.url("/health")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => {}
        }
        assert!(t0.elapsed() < HANG_GUARD, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
