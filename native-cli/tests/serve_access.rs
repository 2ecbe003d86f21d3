//! Who may call the server: the API key (401 in OpenAI's shape, /health and
//! /metrics open), CORS (preflights answered for allowed origins, 403 for
//! others and for cross-origin requests from them), the Host check on
//! loopback (DNS rebinding), JSON bodies only (415), and the server-side
//! `max_tokens` default and cap.

mod serve_common;

use serde_json::json;
use serve_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-test-0123456789";
const ORIGIN: &str = "https://app.example";

fn chat(extra: serde_json::Value) -> serde_json::Value {
    let mut b = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// One raw request; the status line and the rest.
async fn raw(addr: &str, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_cors_host_and_content_type() {
    let server = Server::start(&[
        "--api-key",
        KEY,
        "--allowed-origins",
        &format!("{ORIGIN},https://other.example"),
        "--max-tokens-default",
        "5",
        "--max-tokens-cap",
        "20",
    ]);
    let c = client();
    let url = server.url("/v1/chat/completions");
    let auth = format!("Bearer {KEY}");

    // API key: missing or wrong is 401 in OpenAI's shape; right is 200.
    let e = expect_error(post(&c, &url, &chat(json!({"max_tokens": 2}))).await, 401).await;
    assert_eq!(e["code"], "invalid_api_key", "{e}");
    assert_eq!(e["type"], "invalid_request_error", "{e}");
    let wrong = c
        .post(&url)
        .bearer_auth("sk-wrong-key-000000")
        .json(&chat(json!({"max_tokens": 2})))
        .send()
        .await
        .unwrap();
    let e = expect_error(wrong, 401).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Incorrect API key provided"),
        "{e}"
    );
    assert!(
        !e["message"].as_str().unwrap().contains("wrong-key"),
        "key echoed: {e}"
    );
    let models = c.get(server.url("/v1/models")).send().await.unwrap();
    expect_error(models, 401).await;
    let ok = c
        .post(&url)
        .header("authorization", &auth)
        .json(&chat(json!({"max_tokens": 2})))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // /health and /metrics stay open.
    assert_eq!(
        c.get(server.url("/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(server.url("/metrics")).send().await.unwrap().status(),
        200
    );

    // CORS preflight: allowed origin -> 204 with the headers, without the key.
    let pre = c
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "x-stainless-os"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    // ...another origin -> 403.
    let pre = c
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let e = expect_error(pre, 403).await;
    assert_eq!(e["code"], "origin_not_allowed");
    // A request from an allowed origin carries Allow-Origin; from another, 403.
    let ok = c
        .post(&url)
        .header("authorization", &auth)
        .header("origin", ORIGIN)
        .json(&chat(json!({"max_tokens": 2})))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], ORIGIN);
    let bad = c
        .post(&url)
        .header("authorization", &auth)
        .header("origin", "https://evil.example")
        .json(&chat(json!({"max_tokens": 2})))
        .send()
        .await
        .unwrap();
    expect_error(bad, 403).await;

    // Host check on loopback: a rebound name is refused, the bound address is not.
    let addr = server.addr().to_string();
    let body = chat(json!({"max_tokens": 2})).to_string();
    let request = |host: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let evil = raw(
        &addr,
        &request(&format!(
            "evil.example:{}",
            addr.rsplit(':').next().unwrap()
        )),
    )
    .await;
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    assert!(evil.contains("host_not_allowed"), "{evil}");
    let port = addr.rsplit(':').next().unwrap();
    let local = raw(&addr, &request(&format!("localhost:{port}"))).await;
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");

    // JSON only.
    let plain = c
        .post(&url)
        .header("authorization", &auth)
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let e = expect_error(plain, 415).await;
    assert_eq!(e["code"], "unsupported_media_type");
    let none = c
        .post(&url)
        .header("authorization", &auth)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect_error(none, 415).await;
    let charset = c
        .post(&url)
        .header("authorization", &auth)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(charset.status(), 200);

    // max_tokens: a chat without it stops at the server's default...
    let resp = c
        .post(&url)
        .header("authorization", &auth)
        .json(&chat(json!({"ignore_eos": true})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(n <= 5, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    // ...and one over the cap is a 400 naming max_tokens.
    let over = c
        .post(&url)
        .header("authorization", &auth)
        .json(&chat(json!({"max_tokens": 21})))
        .send()
        .await
        .unwrap();
    let e = expect_error(over, 400).await;
    assert_eq!(e["param"], "max_tokens", "{e}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// A default larger than what the context leaves beside a long prompt
/// gives what the context leaves, not a context-length error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_default_yields_to_the_context() {
    let server = Server::start(&["--max-tokens-default", "200"]);
    let c = client();
    let prompt = "ab ".repeat(40);
    let resp = post(
        &c,
        &server.url("/v1/chat/completions"),
        &json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "ignore_eos": true,
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let (p, n) = (
        v["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        v["usage"]["completion_tokens"].as_u64().unwrap() as usize,
    );
    assert!(
        p + 200 > CONTEXT,
        "the prompt must leave less than the default: {v}"
    );
    assert!(n <= CONTEXT - p, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
}
