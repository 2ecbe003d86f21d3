//! Malformed requests get the right status and OpenAI's error JSON, while a
//! stream running beside them goes on unharmed and the server stays up.

mod serve_common;

use serde_json::{json, Value};
use serve_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY_LIMIT: usize = 64 * 1024;

/// Sends raw bytes as one HTTP/1.1 request and returns the response's
/// status and body, reading only the head and what follows it.
async fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before taking all of a too-large body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// A bad request's name, its response, and the status, `param` and `code` it must have.
type Case = (
    &'static str,
    reqwest::Response,
    u16,
    Option<&'static str>,
    Option<&'static str>,
);

fn error_json(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_and_hurt_nothing() {
    let limit = BODY_LIMIT.to_string();
    let server = Server::start(&["--max-body-bytes", &limit]);
    let c = client();
    let url = server.url("/v1/completions");
    let chat = server.url("/v1/chat/completions");

    let alone = run_alone(&server.model_path, "steady stream", 230, &["--ignore-eos"]);
    let stream_body = completion_body(
        "steady stream",
        230,
        json!({"stream": true, "ignore_eos": true}),
    );
    let mut sse = SseReader::new(post(&c, &url, &stream_body).await);
    let mut payloads = vec![sse.next().await.expect("first chunk")];

    let send_raw = |body: &'static [u8]| {
        let c = c.clone();
        let url = url.clone();
        async move {
            c.post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let cases: Vec<Case> = vec![
        ("bad json", send_raw(b"{\"model\": \"tiny\", ").await, 400, None, None),
        ("not an object", send_raw(b"[1, 2, 3]").await, 400, None, None),
        ("empty body", send_raw(b"").await, 400, None, None),
        ("invalid utf-8", send_raw(b"{\"model\": \"tiny\xff\xfe\", \"prompt\": \"a\"}").await, 400, None, None),
        (
            "wrong type",
            post(&c, &url, &json!({"model": MODEL, "prompt": "a", "max_tokens": "ten"})).await,
            400,
            Some("max_tokens"),
            None,
        ),
        (
            "prompt of the wrong type",
            post(&c, &url, &json!({"model": MODEL, "prompt": {"text": "a"}})).await,
            400,
            Some("prompt"),
            None,
        ),
        (
            "negative max_tokens",
            post(&c, &url, &completion_body("a", 1, json!({"max_tokens": -5}))).await,
            400,
            Some("max_tokens"),
            None,
        ),
        (
            "negative temperature",
            post(&c, &url, &completion_body("a", 1, json!({"temperature": -1}))).await,
            400,
            Some("temperature"),
            None,
        ),
        (
            "huge n",
            post(&c, &url, &completion_body("a", 1, json!({"n": 1000}))).await,
            400,
            Some("n"),
            None,
        ),
        (
            "unknown field",
            post(&c, &url, &completion_body("a", 1, json!({"frobnicate": true}))).await,
            400,
            Some("frobnicate"),
            None,
        ),
        (
            "chat field on completions",
            post(&c, &url, &completion_body("a", 1, json!({"messages": []}))).await,
            400,
            Some("messages"),
            None,
        ),
        (
            "missing messages",
            post(&c, &chat, &json!({"model": MODEL})).await,
            400,
            Some("messages"),
            None,
        ),
        (
            "unknown model",
            post(&c, &url, &json!({"model": "gpt-4o", "prompt": "a"})).await,
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            "prompt + max_tokens over the context",
            post(&c, &url, &completion_body(&"ab ".repeat(40), 200, json!({}))).await,
            400,
            None,
            Some("context_length_exceeded"),
        ),
        (
            "prompt alone over the context",
            post(&c, &chat, &json!({"model": MODEL, "messages": [{"role": "user", "content": "ab ".repeat(120)}]})).await,
            400,
            None,
            Some("context_length_exceeded"),
        ),
        (
            "streaming request with a bad field still gets JSON",
            post(&c, &url, &completion_body("a", 1, json!({"stream": true, "top_p": 7}))).await,
            400,
            Some("top_p"),
            None,
        ),
        (
            "wrong method",
            c.get(&url).send().await.unwrap(),
            405,
            None,
            Some("method_not_allowed"),
        ),
        (
            "wrong path",
            c.post(server.url("/v1/audio/speech")).json(&json!({})).send().await.unwrap(),
            404,
            None,
            Some("not_found"),
        ),
    ];
    for (name, resp, status, param, code) in cases {
        let e = expect_error(resp, status).await;
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{name}: {e}");
        }
        if let Some(cd) = code {
            assert_eq!(e["code"], cd, "{name}: {e}");
        }
        payloads.push(sse.next().await.expect("the stream goes on"));
    }

    // Too large: refused from Content-Length before the body is sent...
    let addr = server.addr().to_string();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        100 * 1024 * 1024
    );
    let (status, body) = raw(&addr, &head, b"{\"model\": \"tiny\"").await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_json(&body)["code"], "request_too_large");
    // ...and, without a length, once it has read past the limit.
    let big = format!(
        "{{\"model\": \"tiny\", \"prompt\": \"{}\"}}",
        "a".repeat(2 * BODY_LIMIT)
    );
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(big.as_bytes());
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw(&addr, &head, &chunked).await;
    assert_eq!(status, 413, "{body}");
    error_json(&body);

    // The stream finished exactly as it would alone.
    payloads.extend(sse.rest().await);
    let s = assemble(&payloads, "text_completion", 1);
    assert_eq!(s.text[0], alone["text"].as_str().unwrap());
    assert_eq!(s.finish[0].as_deref(), Some("length"));

    // And the server still serves.
    assert_eq!(
        c.get(server.url("/health")).send().await.unwrap().status(),
        200
    );
    let ok = post(&c, &url, &completion_body("a", 2, json!({}))).await;
    assert_eq!(ok.status(), 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
