//! 64 concurrent streaming clients on loopback, a quarter of them hanging up
//! mid-stream: every other request gets exactly what it gets alone, and
//! afterwards nothing runs, nothing waits and no KV block is in use.

mod serve_common;

use std::sync::Arc;

use serde_json::{json, Value};
use serve_common::*;

const CLIENTS: usize = 64;

struct Req {
    prompt: String,
    max_tokens: usize,
    ignore_eos: bool,
    /// Reads this many chunks, then disconnects.
    hang_up_after: Option<usize>,
}

fn requests() -> Vec<Req> {
    let words = [
        "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "runs",
    ];
    (0..CLIENTS)
        .map(|i| {
            let len = 1 + (i * 7) % 23;
            let prompt: Vec<&str> = (0..len).map(|j| words[(i + j * 3) % words.len()]).collect();
            let hang_up = i % 4 == 3;
            Req {
                prompt: prompt.join(" "),
                // Hang-ups ask for many tokens, so they are surely mid-stream.
                max_tokens: if hang_up { 120 } else { [3, 8, 17, 30][i % 4] },
                ignore_eos: i % 2 == 0 || hang_up,
                hang_up_after: hang_up.then_some(1 + i % 3),
            }
        })
        .collect()
}

fn body(r: &Req, stream: bool) -> Value {
    completion_body(
        &r.prompt,
        r.max_tokens,
        json!({"stream": stream, "ignore_eos": r.ignore_eos}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_some_hang_up() {
    // A KV pool (96 blocks) smaller than the load needs: requests also wait for blocks.
    let server = Arc::new(Server::start(&["--kv-memory", "384KiB"]));
    let c = client();
    let reqs = Arc::new(requests());

    // Each completing request alone, one after another.
    let mut alone = vec![None; CLIENTS];
    let mut alone_tokens = 0;
    for (i, r) in reqs.iter().enumerate() {
        if r.hang_up_after.is_none() {
            let v: Value = post(&c, &server.url("/v1/completions"), &body(r, false))
                .await
                .json()
                .await
                .unwrap();
            let ch = &v["choices"][0];
            alone_tokens += v["usage"]["completion_tokens"].as_u64().unwrap();
            alone[i] = Some((
                ch["text"].as_str().unwrap().to_string(),
                ch["finish_reason"].as_str().unwrap().to_string(),
            ));
        }
    }

    // All at once, streaming.
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (c, server, reqs) = (c.clone(), server.clone(), reqs.clone());
        tasks.push(tokio::spawn(async move {
            let r = &reqs[i];
            let resp = post(&c, &server.url("/v1/completions"), &body(r, true)).await;
            let mut sse = SseReader::new(resp);
            if let Some(n) = r.hang_up_after {
                for _ in 0..n {
                    let chunk = sse.next().await.expect("a chunk before hanging up");
                    assert_ne!(chunk, "[DONE]");
                }
                return None; // drops the connection mid-stream
            }
            let s = assemble(&sse.rest().await, "text_completion", 1);
            Some((s.text[0].clone(), s.finish[0].clone().unwrap()))
        }));
    }
    let mut completed = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let got = t.await.expect("client task");
        if let Some(got) = got {
            assert_eq!(
                Some(&got),
                alone[i].as_ref(),
                "request {i} batched differs from alone"
            );
            completed += 1;
        }
    }
    assert_eq!(completed, CLIENTS - CLIENTS / 4);

    // The hung-up requests were cancelled and every block came back.
    let text = wait_idle(&c, &server).await;
    eprintln!(
        "preemptions under load: {}",
        metric(&text, "hearth_preemptions_total")
    );
    assert_eq!(metric(&text, "hearth_kv_blocks_used"), 0.0);
    assert_eq!(metric(&text, "hearth_running_sequences"), 0.0);
    assert_eq!(metric(&text, "hearth_waiting_sequences"), 0.0);
    // Hung-up requests were cut short of their 120 tokens.
    let hung_up_max = (CLIENTS / 4 * 120) as u64;
    let gen = metric(&text, "hearth_generation_tokens_total") as u64;
    assert!(
        gen < 2 * alone_tokens + hung_up_max,
        "{gen} tokens: nothing was cancelled"
    );
    let resp = c.get(server.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
