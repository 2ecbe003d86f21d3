//! The C ABI of Hearth, for desktop apps in any language that calls C (C++,
//! Swift, C#, Python ctypes): open a model, submit requests whose tokens
//! stream to a callback, cancel them, free the engine. `include/hearth.h` is
//! generated from this crate by cbindgen (tests/header.rs keeps it current).
//!
//! Every function returns a `HearthStatus` (or nothing where nothing can
//! fail) and records a message for `hearth_last_error()`; none unwinds a
//! panic into C. Each checks its pointers for NULL and its strings for
//! UTF-8.

mod engine;
mod error;
mod types;

use std::ffi::{c_char, c_void};

pub use engine::HearthEngine;
pub use error::HearthStatus;
pub use types::{
    HearthEvent, HearthEventCallback, HearthEventKind, HearthFinishReason, HearthOptions,
    HearthPromptKind, HearthRequest,
};

use error::{guard, last_error_ptr, str_arg, Failure};

/// The library's version, e.g. "0.1.0" (static, never freed).
#[no_mangle]
pub extern "C" fn hearth_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the latest failed `hearth_*` call on the calling thread
/// (UTF-8, NUL-terminated), or NULL if none failed. The library owns it:
/// it stays valid until the next failing call on this thread. Successful
/// calls leave it as it was.
#[no_mangle]
pub extern "C" fn hearth_last_error() -> *const c_char {
    last_error_ptr()
}

/// The name of a status code, e.g. "HEARTH_ERR_BUSY" (static, never freed);
/// "HEARTH_UNKNOWN_STATUS" for a number that is none.
#[no_mangle]
pub extern "C" fn hearth_status_name(status: i32) -> *const c_char {
    error::status_name(status).as_ptr()
}

/// The default engine options: 256 MiB of KV cache, batches of 4 requests,
/// no request limit, the best GPU adapter.
#[no_mangle]
pub extern "C" fn hearth_options_default() -> HearthOptions {
    HearthOptions::default()
}

/// The default request: a chat prompt (still NULL: set it), greedy, 256
/// tokens at most, no seed, no stop strings.
#[no_mangle]
pub extern "C" fn hearth_request_default() -> HearthRequest {
    HearthRequest::default()
}

/// Loads the model at `model_path` (a GGUF file, or a Hugging Face model
/// directory) onto the GPU and starts its engine thread; blocks until done.
/// `options` may be NULL for `hearth_options_default()`. On success
/// `*out_engine` is the engine, to be freed with `hearth_engine_free`; on
/// failure it is NULL.
///
/// # Safety
/// `model_path` is a NUL-terminated string; `options` is NULL or points to
/// a `HearthOptions`; `out_engine` points to writable memory.
#[no_mangle]
pub unsafe extern "C" fn hearth_engine_open(
    model_path: *const c_char,
    options: *const HearthOptions,
    out_engine: *mut *mut HearthEngine,
) -> HearthStatus {
    guard(|| {
        if out_engine.is_null() {
            return Err(Failure::invalid("out_engine is NULL"));
        }
        // SAFETY: checked non-NULL; writable by the caller's contract.
        unsafe { *out_engine = std::ptr::null_mut() };
        // SAFETY: the caller's contract.
        let path = unsafe { str_arg(model_path, "model_path") }?;
        let options = if options.is_null() {
            HearthOptions::default()
        } else {
            // SAFETY: non-NULL, points to a HearthOptions.
            unsafe { *options }
        };
        // SAFETY: `options.adapter` follows the struct's contract.
        let (engine_options, config) = unsafe { options.to_engine() }?;
        let mut engine = hearth::Hearth::open(path.as_ref(), &engine_options, &mut |_| {})?;
        engine.set_config(config)?;
        let engine = Box::new(HearthEngine::start(engine)?);
        // SAFETY: as above.
        unsafe { *out_engine = Box::into_raw(engine) };
        Ok(())
    })
}

/// Queues a request and returns at once (after checking it); its events go
/// to `callback` with `user_data`, on a library thread (see
/// `HearthEventCallback`). On success `*out_request_id` (if not NULL) is
/// the request's id, and the callback will be called until a last
/// `HEARTH_EVENT_FINISHED` or `HEARTH_EVENT_FAILED` event. On failure the
/// callback is never called. Any thread may call this, also concurrently.
///
/// # Safety
/// `engine` came from `hearth_engine_open` and is not freed; `request`
/// points to a `HearthRequest` whose pointers are valid as its fields
/// document; `user_data` may be used from another thread until the last
/// event; `out_request_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hearth_submit(
    engine: *mut HearthEngine,
    request: *const HearthRequest,
    callback: HearthEventCallback,
    user_data: *mut c_void,
    out_request_id: *mut u64,
) -> HearthStatus {
    guard(|| {
        // SAFETY: NULL or a live engine, by the caller's contract.
        let engine =
            unsafe { engine.as_ref() }.ok_or_else(|| Failure::invalid("engine is NULL"))?;
        // SAFETY: NULL or a HearthRequest.
        let request =
            unsafe { request.as_ref() }.ok_or_else(|| Failure::invalid("request is NULL"))?;
        let callback = callback.ok_or_else(|| Failure::invalid("callback is NULL"))?;
        // SAFETY: the request's pointers follow its contract.
        let req = unsafe { request.to_request() }?;
        let id = engine.submit(req, callback, user_data)?;
        if !out_request_id.is_null() {
            // SAFETY: non-NULL and writable by the caller's contract.
            unsafe { *out_request_id = id };
        }
        Ok(())
    })
}

/// Cancels a request: it ends with a `HEARTH_EVENT_FINISHED` event whose
/// reason is `HEARTH_FINISH_CANCELLED` (unless it ended already, then this
/// does nothing; an unknown id does nothing too). Returns at once; any
/// thread may call it, a callback too.
///
/// # Safety
/// `engine` came from `hearth_engine_open` and is not freed.
#[no_mangle]
pub unsafe extern "C" fn hearth_cancel(engine: *mut HearthEngine, request_id: u64) -> HearthStatus {
    guard(|| {
        // SAFETY: NULL or a live engine, by the caller's contract.
        let engine =
            unsafe { engine.as_ref() }.ok_or_else(|| Failure::invalid("engine is NULL"))?;
        engine.cancel(request_id);
        Ok(())
    })
}

/// Cancels every request, waits until their last events were delivered,
/// stops the engine and frees it with its GPU memory. NULL does nothing.
/// Called from a callback, it returns at once and the waiting and freeing
/// happen on a library thread. Callbacks may still call `hearth_cancel`
/// and `hearth_submit` (which then fails with `HEARTH_ERR_STOPPED`) while
/// it waits for them; no other thread may use `engine` during or after it.
///
/// # Safety
/// `engine` is NULL or came from `hearth_engine_open` and is not freed yet.
#[no_mangle]
pub unsafe extern "C" fn hearth_engine_free(engine: *mut HearthEngine) {
    if engine.is_null() {
        return;
    }
    // SAFETY: from Box::into_raw in hearth_engine_open, freed only here.
    let free = || unsafe { HearthEngine::free(engine) };
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(free)) {
        eprintln!("hearth: {}", error::panic_message(&*panic));
    }
}
