//! The C ABI driven from Rust as a C caller would: argument checks and
//! error codes (no model needed), then on the default model greedy ids
//! through the ABI against `Engine::generate_blocking`, two requests at
//! once with one cancelled, and request errors.

use std::ffi::{c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use hearth_capi::*;
use HearthStatus::*;

/// An event as the test keeps it (the C event's pointers die with the call).
#[derive(Debug, Clone)]
struct Owned {
    kind: HearthEventKind,
    request_id: u64,
    token_id: u32,
    text: String,
    finish: HearthFinishReason,
    completion_tokens: u32,
    error: HearthStatus,
}

/// What a callback's `user_data` points to: one request's events.
#[derive(Default)]
struct Sink {
    events: Mutex<Vec<Owned>>,
    done: Condvar,
    /// Cancel the request after this many tokens (0: never).
    cancel_after: usize,
    /// Free the engine then instead of cancelling.
    free_instead: bool,
    engine: Mutex<Option<EnginePtr>>,
}

#[derive(Clone, Copy)]
struct EnginePtr(*mut HearthEngine);
// SAFETY: the ABI lets any thread call hearth_cancel.
unsafe impl Send for EnginePtr {}

unsafe extern "C" fn on_event(user_data: *mut c_void, event: *const HearthEvent) {
    let sink = unsafe { &*(user_data as *const Sink) };
    let e = unsafe { &*event };
    let text = unsafe { std::slice::from_raw_parts(e.text.cast::<u8>(), e.text_len) };
    assert_eq!(
        unsafe { *e.text.add(e.text_len) },
        0,
        "text is NUL-terminated"
    );
    let mut events = sink.events.lock().unwrap();
    events.push(Owned {
        kind: e.kind,
        request_id: e.request_id,
        token_id: e.token_id,
        text: String::from_utf8(text.to_vec()).expect("token text is UTF-8"),
        finish: e.finish_reason,
        completion_tokens: e.completion_tokens,
        error: e.error,
    });
    let tokens = events
        .iter()
        .filter(|e| e.kind == HearthEventKind::HEARTH_EVENT_TOKEN);
    if sink.cancel_after > 0 && tokens.count() == sink.cancel_after {
        let engine = sink
            .engine
            .lock()
            .unwrap()
            .expect("engine set before submit");
        if sink.free_instead {
            unsafe { hearth_engine_free(engine.0) };
        } else {
            assert_eq!(unsafe { hearth_cancel(engine.0, e.request_id) }, HEARTH_OK);
        }
    }
    if e.kind != HearthEventKind::HEARTH_EVENT_TOKEN {
        sink.done.notify_all();
    }
}

impl Sink {
    fn user_data(&self) -> *mut c_void {
        self as *const Sink as *mut c_void
    }

    /// Every event once the last one came.
    fn wait(&self) -> Vec<Owned> {
        let events = self.events.lock().unwrap();
        let (events, timeout) = self
            .done
            .wait_timeout_while(events, Duration::from_secs(600), |ev| {
                ev.last()
                    .is_none_or(|e| e.kind == HearthEventKind::HEARTH_EVENT_TOKEN)
            })
            .unwrap();
        assert!(!timeout.timed_out(), "no last event in 10 minutes");
        events.clone()
    }
}

fn last_error() -> String {
    let p = hearth_last_error();
    assert!(!p.is_null(), "a failed call leaves a message");
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
}

fn open(path: &CStr, opts: Option<&HearthOptions>) -> (HearthStatus, *mut HearthEngine) {
    // Not NULL, so the test sees a failed open clear it.
    let mut engine = std::ptr::dangling_mut::<HearthEngine>();
    let opts = opts.map_or(std::ptr::null(), |o| o as *const HearthOptions);
    let status = unsafe { hearth_engine_open(path.as_ptr(), opts, &mut engine) };
    (status, engine)
}

#[test]
fn arguments_are_checked_without_a_model() {
    let (status, engine) = open(c"/nonexistent/model.gguf", None);
    assert_eq!(status, HEARTH_ERR_IO, "{}", last_error());
    assert!(engine.is_null(), "a failed open clears *out_engine");
    assert!(
        last_error().contains("/nonexistent/model.gguf"),
        "{}",
        last_error()
    );

    let status = unsafe {
        hearth_engine_open(
            std::ptr::null(),
            std::ptr::null(),
            &mut std::ptr::null_mut(),
        )
    };
    assert_eq!(status, HEARTH_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("model_path"), "{}", last_error());
    let status =
        unsafe { hearth_engine_open(c"x".as_ptr(), std::ptr::null(), std::ptr::null_mut()) };
    assert_eq!(status, HEARTH_ERR_INVALID_ARGUMENT);

    let latin1 = CString::new(vec![b'm', 0xE9, b'.', b'g']).unwrap();
    let (status, _) = open(&latin1, None);
    assert_eq!(status, HEARTH_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("UTF-8"), "{}", last_error());
    let opts = HearthOptions {
        adapter: latin1.as_ptr(),
        ..hearth_options_default()
    };
    let (status, _) = open(c"/nonexistent/model.gguf", Some(&opts));
    assert_eq!(status, HEARTH_ERR_INVALID_ARGUMENT, "{}", last_error());

    let req = HearthRequest {
        prompt: c"hi".as_ptr(),
        ..hearth_request_default()
    };
    let mut id = 0;
    let status = unsafe {
        hearth_submit(
            std::ptr::null_mut(),
            &req,
            Some(on_event),
            std::ptr::null_mut(),
            &mut id,
        )
    };
    assert_eq!(status, HEARTH_ERR_INVALID_ARGUMENT);
    assert_eq!(
        unsafe { hearth_cancel(std::ptr::null_mut(), 0) },
        HEARTH_ERR_INVALID_ARGUMENT
    );
    unsafe { hearth_engine_free(std::ptr::null_mut()) };

    let name = |s: i32| {
        unsafe { CStr::from_ptr(hearth_status_name(s)) }
            .to_str()
            .unwrap()
    };
    assert_eq!(name(HEARTH_ERR_BUSY as i32), "HEARTH_ERR_BUSY");
    assert_eq!(name(-7), "HEARTH_UNKNOWN_STATUS");
    let version = unsafe { CStr::from_ptr(hearth_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));

    let d = hearth_request_default();
    assert_eq!((d.max_tokens, d.temperature, d.has_seed), (256, 0.0, false));
}

fn model_path() -> Option<PathBuf> {
    let dir = std::env::var_os("HEARTH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is missing (run `cargo run -p hearth-cli -- fetch`)",
            p.display()
        );
        None
    }
}

const PROMPT: &str = "What is the capital of France?";
const MAX_TOKENS: u32 = 24;

/// The greedy ids of PROMPT through the Rust API.
fn rust_ids(path: &std::path::Path) -> Vec<u32> {
    use hearth::{EngineOptions, GenerateOptions, Hearth, Prompt};
    let mut opts = EngineOptions::default();
    opts.forward.kv_memory = 32 << 20;
    let mut h = Hearth::open(path, &opts, &mut |_| {}).expect("load the model");
    let ids = h.prompt_ids(&Prompt::chat_user(PROMPT)).unwrap();
    let gen = GenerateOptions {
        max_tokens: MAX_TOKENS as usize,
        ..GenerateOptions::default()
    };
    h.generate_blocking(&ids, &gen, &mut |_| true).unwrap().ids
}

fn open_model(path: &std::path::Path) -> *mut HearthEngine {
    let opts = HearthOptions {
        kv_memory: 32 << 20,
        ..hearth_options_default()
    };
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let (status, engine) = open(&cpath, Some(&opts));
    assert_eq!(status, HEARTH_OK, "{}", last_error());
    assert!(!engine.is_null());
    engine
}

fn submit(engine: *mut HearthEngine, req: &HearthRequest, sink: &Sink) -> (HearthStatus, u64) {
    let mut id = u64::MAX;
    let status = unsafe { hearth_submit(engine, req, Some(on_event), sink.user_data(), &mut id) };
    (status, id)
}

fn tokens(events: &[Owned]) -> Vec<u32> {
    events
        .iter()
        .filter(|e| e.kind == HearthEventKind::HEARTH_EVENT_TOKEN)
        .map(|e| e.token_id)
        .collect()
}

#[test]
fn the_abi_generates_what_the_rust_api_does() {
    let Some(path) = model_path() else { return };
    let expected = rust_ids(&path);
    assert!(!expected.is_empty());

    let engine = open_model(&path);

    let prompt = CString::new(PROMPT).unwrap();
    let req = HearthRequest {
        prompt: prompt.as_ptr(),
        max_tokens: MAX_TOKENS,
        ..hearth_request_default()
    };
    // Two at once: one runs to its end, the other is cancelled after a token.
    let full = Sink::default();
    let cancelled = Sink {
        cancel_after: 1,
        ..Sink::default()
    };
    *cancelled.engine.lock().unwrap() = Some(EnginePtr(engine));
    let long = HearthRequest {
        max_tokens: 200,
        ignore_eos: true,
        ..req
    };
    let (s1, id1) = submit(engine, &req, &full);
    let (s2, id2) = submit(engine, &long, &cancelled);
    assert_eq!((s1, s2), (HEARTH_OK, HEARTH_OK), "{}", last_error());
    assert_ne!(id1, id2);

    let events = full.wait();
    assert!(events.iter().all(|e| e.request_id == id1));
    assert_eq!(tokens(&events), expected, "greedy ids through the C ABI");
    let last = events.last().unwrap();
    assert_eq!(last.kind, HearthEventKind::HEARTH_EVENT_FINISHED);
    assert_ne!(last.finish, HearthFinishReason::HEARTH_FINISH_CANCELLED);
    assert_eq!(last.completion_tokens as usize, expected.len());
    let text: String = events.iter().map(|e| e.text.as_str()).collect();
    assert!(text.contains("Paris"), "{text:?}");

    let events = cancelled.wait();
    let last = events.last().unwrap();
    assert_eq!(last.kind, HearthEventKind::HEARTH_EVENT_FINISHED);
    assert_eq!(last.finish, HearthFinishReason::HEARTH_FINISH_CANCELLED);
    assert!(tokens(&events).len() < 200, "cancelled before its end");

    // Request errors come back from hearth_submit, the callback never runs.
    let unused = Sink::default();
    let bad = HearthRequest {
        temperature: -1.0,
        ..req
    };
    assert_eq!(submit(engine, &bad, &unused).0, HEARTH_ERR_INVALID_REQUEST);
    assert!(last_error().contains("temperature"), "{}", last_error());
    let bad = HearthRequest {
        prompt_kind: 9,
        ..req
    };
    assert_eq!(submit(engine, &bad, &unused).0, HEARTH_ERR_INVALID_ARGUMENT);
    let bad = HearthRequest {
        prompt_kind: HearthPromptKind::HEARTH_PROMPT_TEXT as u32,
        system: c"be brief".as_ptr(),
        ..req
    };
    assert_eq!(submit(engine, &bad, &unused).0, HEARTH_ERR_INVALID_ARGUMENT);
    let bad = HearthRequest {
        max_tokens: 1 << 30,
        ..req
    };
    assert_eq!(submit(engine, &bad, &unused).0, HEARTH_ERR_CONTEXT_LENGTH);
    let bad = HearthRequest {
        stop_count: 1,
        ..req
    };
    assert_eq!(submit(engine, &bad, &unused).0, HEARTH_ERR_INVALID_ARGUMENT);
    assert!(unused.events.lock().unwrap().is_empty());

    // Freeing cancels what still runs; its last event arrives before free returns.
    let pending = Sink::default();
    assert_eq!(submit(engine, &long, &pending).0, HEARTH_OK);
    unsafe { hearth_engine_free(engine) };
    let events = pending.events.lock().unwrap();
    let last = events.last().expect("a last event before free returned");
    assert_eq!(last.finish, HearthFinishReason::HEARTH_FINISH_CANCELLED);
    assert_eq!(last.error, HEARTH_OK);
}

#[test]
fn a_callback_may_free_the_engine() {
    let Some(path) = model_path() else { return };
    let engine = open_model(&path);
    let sink = Sink {
        cancel_after: 1,
        free_instead: true,
        ..Sink::default()
    };
    *sink.engine.lock().unwrap() = Some(EnginePtr(engine));
    let req = HearthRequest {
        prompt: c"Tell me a long story.".as_ptr(),
        max_tokens: 200,
        ignore_eos: true,
        ..hearth_request_default()
    };
    assert_eq!(submit(engine, &req, &sink).0, HEARTH_OK, "{}", last_error());
    // The free, on a library thread, cancels the request, whose last event
    // still comes (to this sink, alive until then).
    let events = sink.wait();
    let last = events.last().unwrap();
    assert_eq!(last.finish, HearthFinishReason::HEARTH_FINISH_CANCELLED);
}
