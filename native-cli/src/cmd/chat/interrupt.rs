//! Ctrl-C stops the answer being written, not the program: the session
//! takes SIGINT over for its whole life and turns each one into an abort of
//! the request in flight (the engine ends it at its next step, so a long
//! prefill stops too). At the line editor's prompt the terminal is in raw
//! mode and Ctrl-C reaches the editor as a key instead.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use hearth::{EngineHandle, RequestId};

#[derive(Clone, Copy)]
enum State {
    /// Waiting for the next line.
    Idle,
    /// Submitted, id not known yet: an interrupt now aborts it once it is.
    Submitting {
        interrupted: bool,
    },
    Answering(RequestId),
}

pub struct Interrupts {
    handle: EngineHandle,
    state: Arc<Mutex<State>>,
}

/// What Ctrl-C at the prompt prints.
pub const HINT: &str = "hearth: Ctrl-C stops an answer; Ctrl-D or /exit quits";

impl Interrupts {
    /// Installs the SIGINT handler; from here on Ctrl-C no longer ends the process.
    pub fn install(handle: EngineHandle) -> Result<Interrupts> {
        let state = Arc::new(Mutex::new(State::Idle));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the Ctrl-C listener")?;
        // Registered here, before any answer, so the first Ctrl-C is caught.
        #[cfg(unix)]
        let mut signals = {
            let _in_rt = rt.enter();
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("listening for Ctrl-C")?
        };
        let (h, s) = (handle.clone(), state.clone());
        std::thread::Builder::new()
            .name("hearth-ctrl-c".into())
            .spawn(move || {
                rt.block_on(async move {
                    loop {
                        #[cfg(unix)]
                        let got = signals.recv().await.is_some();
                        #[cfg(not(unix))]
                        let got = tokio::signal::ctrl_c().await.is_ok();
                        if !got {
                            break;
                        }
                        on_interrupt(&h, &s);
                    }
                })
            })
            .context("starting the Ctrl-C listener")?;
        Ok(Interrupts { handle, state })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request is about to be submitted.
    pub fn submitting(&self) {
        *self.lock() = State::Submitting { interrupted: false };
    }

    /// Request `id` is in flight; aborted at once if Ctrl-C came while it
    /// was being submitted.
    pub fn answering(&self, id: RequestId) {
        let mut st = self.lock();
        if let State::Submitting { interrupted: true } = *st {
            self.handle.abort(id);
        }
        *st = State::Answering(id);
    }

    /// The answer is over (or never started).
    pub fn idle(&self) {
        *self.lock() = State::Idle;
    }
}

fn on_interrupt(handle: &EngineHandle, state: &Mutex<State>) {
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    match *st {
        State::Idle => eprintln!("\n{HINT}"),
        State::Submitting { .. } => *st = State::Submitting { interrupted: true },
        State::Answering(id) => handle.abort(id),
    }
}
