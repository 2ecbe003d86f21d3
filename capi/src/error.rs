//! Status codes, the thread-local last error, and the guard every exported
//! function runs its body in: no panic may unwind into C (that is undefined
//! behaviour), so a panic becomes `HEARTH_ERR_INTERNAL`.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use hearth::HearthError;

/// What a call returns. The numbers are part of the ABI: new codes may be
/// added, existing ones never change.
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HearthStatus {
    HEARTH_OK = 0,
    /// A NULL pointer where one is required, a string that is not UTF-8, an
    /// option out of range.
    HEARTH_ERR_INVALID_ARGUMENT = 1,
    /// A file could not be read (missing model file, permissions).
    HEARTH_ERR_IO = 2,
    /// A malformed model: truncated, bad magic, missing tensor, bad shape or config.
    HEARTH_ERR_MODEL_FILE = 3,
    /// A well-formed model this runtime does not support.
    HEARTH_ERR_UNSUPPORTED = 4,
    /// The tokenizer or the chat template failed.
    HEARTH_ERR_TOKENIZER = 5,
    /// No usable GPU adapter, or a GPU operation failed.
    HEARTH_ERR_GPU = 6,
    /// A request the engine cannot serve (a bad sampling option, an empty prompt).
    HEARTH_ERR_INVALID_REQUEST = 7,
    /// The prompt plus `max_tokens` do not fit in the model's context.
    HEARTH_ERR_CONTEXT_LENGTH = 8,
    /// The engine holds `max_requests` requests already; retry later.
    HEARTH_ERR_BUSY = 9,
    /// The engine has stopped (it is being freed, or its thread ended).
    HEARTH_ERR_STOPPED = 10,
    /// The KV cache can never hold this request.
    HEARTH_ERR_OUT_OF_KV_MEMORY = 11,
    /// A bug in Hearth (a caught panic), or the system refused a thread.
    HEARTH_ERR_INTERNAL = 12,
}

use HearthStatus::*;

const NAMES: [(HearthStatus, &CStr); 13] = [
    (HEARTH_OK, c"HEARTH_OK"),
    (HEARTH_ERR_INVALID_ARGUMENT, c"HEARTH_ERR_INVALID_ARGUMENT"),
    (HEARTH_ERR_IO, c"HEARTH_ERR_IO"),
    (HEARTH_ERR_MODEL_FILE, c"HEARTH_ERR_MODEL_FILE"),
    (HEARTH_ERR_UNSUPPORTED, c"HEARTH_ERR_UNSUPPORTED"),
    (HEARTH_ERR_TOKENIZER, c"HEARTH_ERR_TOKENIZER"),
    (HEARTH_ERR_GPU, c"HEARTH_ERR_GPU"),
    (HEARTH_ERR_INVALID_REQUEST, c"HEARTH_ERR_INVALID_REQUEST"),
    (HEARTH_ERR_CONTEXT_LENGTH, c"HEARTH_ERR_CONTEXT_LENGTH"),
    (HEARTH_ERR_BUSY, c"HEARTH_ERR_BUSY"),
    (HEARTH_ERR_STOPPED, c"HEARTH_ERR_STOPPED"),
    (HEARTH_ERR_OUT_OF_KV_MEMORY, c"HEARTH_ERR_OUT_OF_KV_MEMORY"),
    (HEARTH_ERR_INTERNAL, c"HEARTH_ERR_INTERNAL"),
];

/// A status number's name; C may pass any number, so it is not a `HearthStatus`.
pub fn status_name(status: i32) -> &'static CStr {
    NAMES
        .iter()
        .find(|(s, _)| *s as i32 == status)
        .map_or(c"HEARTH_UNKNOWN_STATUS", |(_, name)| name)
}

/// The code of a runtime error. Exhaustive on purpose: a new `HearthError`
/// variant must be given a code here, not fall into a catch-all.
pub fn status_of(e: &HearthError) -> HearthStatus {
    match e {
        HearthError::Io { .. } => HEARTH_ERR_IO,
        HearthError::InvalidFile(_)
        | HearthError::MissingTensor(_)
        | HearthError::ShapeMismatch { .. }
        | HearthError::Config(_) => HEARTH_ERR_MODEL_FILE,
        HearthError::Unsupported(_) => HEARTH_ERR_UNSUPPORTED,
        HearthError::Tokenizer(_) | HearthError::Template(_) => HEARTH_ERR_TOKENIZER,
        HearthError::Gpu(_) => HEARTH_ERR_GPU,
        HearthError::InvalidRequest(_) | HearthError::InvalidField { .. } => {
            HEARTH_ERR_INVALID_REQUEST
        }
        HearthError::ContextLength { .. } => HEARTH_ERR_CONTEXT_LENGTH,
        HearthError::Busy(_) => HEARTH_ERR_BUSY,
        HearthError::Stopped(_) => HEARTH_ERR_STOPPED,
        HearthError::OutOfKvMemory(_) => HEARTH_ERR_OUT_OF_KV_MEMORY,
    }
}

/// A failure on its way to C: its code and message.
#[derive(Debug)]
pub struct Failure {
    pub status: HearthStatus,
    pub message: String,
}

impl Failure {
    pub fn new(status: HearthStatus, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(HEARTH_ERR_INVALID_ARGUMENT, message)
    }
}

impl From<HearthError> for Failure {
    fn from(e: HearthError) -> Failure {
        Failure::new(status_of(&e), e.to_string())
    }
}

/// A message as C sees it: interior NULs (never expected) become spaces
/// rather than losing the message.
pub fn c_message(message: &str) -> CString {
    CString::new(message.replace('\0', " ")).unwrap_or_default()
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c_message(message)));
}

/// The message of the latest failed `hearth_*` call on this thread, or NULL
/// if none failed yet.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
}

/// Runs an exported function's body: a failure is recorded as this
/// thread's last error and its code returned; a panic is caught.
pub fn guard(body: impl FnOnce() -> Result<(), Failure>) -> HearthStatus {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return HEARTH_OK,
        Ok(Err(f)) => f,
        Err(panic) => Failure::new(HEARTH_ERR_INTERNAL, panic_message(&*panic)),
    };
    set_last_error(&failure.message);
    failure.status
}

pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic");
    format!("internal error (a bug in Hearth): {what}")
}

/// A required C string as UTF-8; `what` names the argument in the error.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|e| Failure::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// [`str_arg`] for an argument that may be NULL.
///
/// # Safety
/// As [`str_arg`].
pub unsafe fn opt_str_arg<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { str_arg(p, what) }.map(Some)
    }
}
