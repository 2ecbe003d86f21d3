//! The engine behind a `HearthEngine*`: the runtime's engine on its own
//! thread, plus one thread per request that turns the request's event
//! stream into callback calls (the callback may block; the engine must not).

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::Mutex;
use std::thread::JoinHandle;

use hearth::engine::EngineThread;
use hearth::{EngineHandle, Event, Hearth, RequestStream};

use crate::error::{c_message, status_of, Failure, HearthStatus};
use crate::types::{HearthEvent, HearthEventKind, HearthFinishReason};

/// An open model and the engine that serves it (opaque to C).
pub struct HearthEngine {
    handle: EngineHandle,
    thread: EngineThread,
    /// Request threads, joined on free; finished ones are pruned on submit.
    requests: Mutex<Vec<JoinHandle<()>>>,
}

thread_local! {
    /// Set on request threads, where freeing the engine inline would join
    /// the very thread doing it.
    static ON_REQUEST_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The C caller's callback and pointer, moved to the request's thread:
/// `hearth_submit` documents that both must be usable from there.
struct Callback {
    f: unsafe extern "C" fn(*mut c_void, *const HearthEvent),
    user_data: *mut c_void,
}

// SAFETY: the caller promises `user_data` may be used from the library's
// threads (hearth_submit's contract).
unsafe impl Send for Callback {}

impl Callback {
    fn deliver(&self, event: &HearthEvent) {
        // SAFETY: a valid function pointer by hearth_submit's contract; the
        // event and the buffers it points into outlive the call.
        unsafe { (self.f)(self.user_data, event) }
    }
}

/// An event with no payload; each kind fills in its own fields.
fn blank(kind: HearthEventKind, request_id: u64) -> HearthEvent {
    HearthEvent {
        kind,
        request_id,
        token_id: 0,
        text: c"".as_ptr(),
        text_len: 0,
        finish_reason: HearthFinishReason::HEARTH_FINISH_NONE,
        prompt_tokens: 0,
        completion_tokens: 0,
        error: HearthStatus::HEARTH_OK,
        error_message: std::ptr::null(),
    }
}

fn failed(cb: &Callback, request_id: u64, status: HearthStatus, message: &str) {
    let message = c_message(message);
    cb.deliver(&HearthEvent {
        error: status,
        error_message: message.as_ptr(),
        ..blank(HearthEventKind::HEARTH_EVENT_FAILED, request_id)
    });
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A request thread's life: every event to the callback, and always a last
/// one, even when the engine went away without finishing the request.
fn pump(mut stream: RequestStream, cb: Callback) {
    ON_REQUEST_THREAD.with(|f| f.set(true));
    let id = stream.id;
    while let Some(event) = stream.next_blocking() {
        match event {
            Event::Token { token, .. } => {
                let len = token.text.len();
                let mut text = token.text.into_bytes();
                text.push(0);
                cb.deliver(&HearthEvent {
                    token_id: token.id,
                    text: text.as_ptr().cast::<c_char>(),
                    text_len: len,
                    ..blank(HearthEventKind::HEARTH_EVENT_TOKEN, id)
                });
            }
            // Requests from C have one choice: its end is the request's.
            Event::Finished { finish, .. } => {
                cb.deliver(&HearthEvent {
                    finish_reason: finish.reason.into(),
                    prompt_tokens: saturate(finish.prompt_tokens),
                    completion_tokens: saturate(finish.completion_tokens),
                    ..blank(HearthEventKind::HEARTH_EVENT_FINISHED, id)
                });
                return;
            }
            Event::Failed(e) => return failed(&cb, id, status_of(&e), &e.to_string()),
            // The C ABI submits generations only.
            Event::Embedding(_) => {}
        }
    }
    failed(
        &cb,
        id,
        HearthStatus::HEARTH_ERR_STOPPED,
        "the engine stopped before the request ended",
    );
}

impl HearthEngine {
    pub fn start(engine: Hearth) -> Result<HearthEngine, Failure> {
        let thread = engine.spawn().map_err(|e| {
            Failure::new(
                HearthStatus::HEARTH_ERR_INTERNAL,
                format!("cannot start the engine thread: {e}"),
            )
        })?;
        Ok(HearthEngine {
            handle: thread.handle(),
            thread,
            requests: Mutex::new(Vec::new()),
        })
    }

    /// Queues `req`; its events go to `f` on a new thread.
    pub fn submit(
        &self,
        req: hearth::Request,
        f: unsafe extern "C" fn(*mut c_void, *const HearthEvent),
        user_data: *mut c_void,
    ) -> Result<u64, Failure> {
        let stream = self.handle.submit_blocking(req)?;
        let id = stream.id;
        let cb = Callback { f, user_data };
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.retain(|t| !t.is_finished());
        // On failure the closure, and with it the stream, is dropped, which
        // aborts the request: the callback is never called.
        let thread = std::thread::Builder::new()
            .name(format!("hearth-request-{id}"))
            .spawn(move || pump(stream, cb))
            .map_err(|e| {
                Failure::new(
                    HearthStatus::HEARTH_ERR_INTERNAL,
                    format!("cannot start a request thread: {e}"),
                )
            })?;
        requests.push(thread);
        Ok(id)
    }

    pub fn cancel(&self, id: u64) {
        self.handle.abort(id);
    }

    /// Cancels everything, waits until the last callback returned and the
    /// engine thread ended, and frees the engine. Until then it is only
    /// shared, never owned: callbacks still running may call `hearth_cancel`
    /// or `hearth_submit` through their pointer. From a request thread (a
    /// callback freeing the engine) the waiting moves to a thread of its own.
    ///
    /// # Safety
    /// `engine` came from `Box::into_raw` and is freed once.
    pub unsafe fn free(engine: *mut HearthEngine) {
        if ON_REQUEST_THREAD.with(Cell::get) {
            // SAFETY: alive until `join` below frees it.
            unsafe { &*engine }.handle.shutdown();
            let engine = FreePtr(engine);
            let spawned = std::thread::Builder::new()
                .name("hearth-free".into())
                // SAFETY: forwarded contract; nothing else frees it.
                .spawn(move || unsafe { Self::join(engine.into_inner()) });
            // Without a thread to wait on, the threads are left to end on
            // their own (the engine is shut down already): a leak, not a hang.
            if let Err(e) = spawned {
                eprintln!("hearth: cannot start a thread to free the engine: {e}");
            }
        } else {
            // SAFETY: forwarded contract.
            unsafe { Self::join(engine) }
        }
    }

    /// # Safety
    /// As [`HearthEngine::free`].
    unsafe fn join(engine: *mut HearthEngine) {
        // SAFETY: alive until the Box below.
        let this = unsafe { &*engine };
        // Shutting down cancels every request; their threads then deliver
        // the last events and end. A callback may submit meanwhile (the
        // engine refuses it, but its thread may start): hence the loop.
        this.handle.shutdown();
        loop {
            let batch =
                std::mem::take(&mut *this.requests.lock().unwrap_or_else(|p| p.into_inner()));
            if batch.is_empty() {
                break;
            }
            for t in batch {
                let _ = t.join();
            }
        }
        // SAFETY: no request thread is left to use the engine.
        let HearthEngine { thread, .. } = *unsafe { Box::from_raw(engine) };
        thread.shutdown();
    }
}

/// The engine on its way to the thread that frees it.
struct FreePtr(*mut HearthEngine);

// SAFETY: HearthEngine is Sync (a handle and a mutex); the pointer moves to
// the one thread that will free it.
unsafe impl Send for FreePtr {}

impl FreePtr {
    // A method, so the closure captures the whole (Send) wrapper rather
    // than its raw-pointer field.
    fn into_inner(self) -> *mut HearthEngine {
        self.0
    }
}
