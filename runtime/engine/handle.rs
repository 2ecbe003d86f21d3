//! The engine's async face, the same on every executor and target: the
//! engine moves into a driver that steps it whenever it has work and sleeps
//! on its command queue otherwise; [`EngineHandle::submit`] queues a
//! [`Request`] and returns a [`RequestStream`] of its events. Dropping the
//! stream aborts the request, and its blocks are free after the next step.
//!
//! Natively [`Engine::spawn`] runs the driver on a thread of its own (a step
//! is blocking GPU work). On wasm32 [`Engine::into_driver`] returns it as a
//! future that the page's event loop runs (`spawn_local`): no threads, and
//! the GPU read-back inside every step yields to the event loop, so new
//! requests and aborts arrive between steps.
//!
//! Only `futures-channel` is used: no tokio, nothing that needs a runtime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_channel::{mpsc, oneshot};
use futures_core::Stream;

use super::llm_engine::Engine;
use super::output::{EngineStats, Finish, Output, RequestId, Token};
use super::request::Request;
use crate::{HearthError, Result};

/// One event of a request's stream.
#[derive(Debug, Clone)]
pub enum Event {
    Token {
        choice: usize,
        token: Token,
    },
    /// An embedding request's vector; its `Finished` follows.
    Embedding(Vec<f32>),
    /// Choice `choice` ended; the stream ends after the last choice's.
    Finished {
        choice: usize,
        finish: Finish,
    },
    /// The request failed midway; no more events follow.
    Failed(HearthError),
}

/// What the engine reports about itself between steps.
#[derive(Debug, Clone, Default)]
pub struct EngineInfo {
    pub context_length: usize,
    pub vocab_size: usize,
    pub stats: EngineStats,
}

type DraftReply = oneshot::Sender<Result<()>>;

/// Submits that may wait for the driver when the engine sets no
/// `max_sequences` (with one, that many).
pub const DEFAULT_PENDING_SUBMITS: usize = 1024;

enum Command {
    Submit {
        req: Box<Request>,
        reply: oneshot::Sender<Result<(RequestId, usize)>>,
        events: mpsc::UnboundedSender<Event>,
        _slot: PendingSlot,
    },
    AttachDraft(Box<Engine>, DraftReply),
    Abort(RequestId),
    AbortAll,
    Shutdown,
}

struct Shared {
    info: Mutex<EngineInfo>,
    alive: AtomicBool,
    /// Submits sent and not yet taken by the driver, at most `max_pending`:
    /// the command queue is bounded for requests (aborts and shutdown are
    /// never refused, and each stream sends at most one abort).
    pending: AtomicUsize,
    max_pending: usize,
}

/// One place in the submit queue, given back when the driver takes the
/// command (or drops it unread).
struct PendingSlot(Arc<Shared>);

impl PendingSlot {
    fn take(shared: &Arc<Shared>) -> Result<PendingSlot> {
        let taken = shared
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < shared.max_pending).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(PendingSlot(shared.clone())),
            Err(n) => Err(HearthError::Busy(format!(
                "{n} requests are already waiting for the engine to take them (the most it \
                 queues); retry later"
            ))),
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Submits requests to a driven engine; cheap to clone, usable from any
/// thread (natively) and any task.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

/// A request's events, in order: tokens of every choice as they come, a
/// `Finished` per choice, and the end of the stream. Dropping it aborts the
/// request.
pub struct RequestStream {
    pub id: RequestId,
    /// The prompt's token count.
    pub prompt_tokens: usize,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Stream for RequestStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl RequestStream {
    /// The next event; `None` once the request is over.
    pub async fn next_event(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| Pin::new(&mut self.rx).poll_next(cx)).await
    }

    /// [`RequestStream::next_event`], waiting on this thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn next_blocking(&mut self) -> Option<Event> {
        pollster::block_on(self.next_event())
    }
}

fn stopped() -> HearthError {
    HearthError::Stopped("the engine no longer takes requests".into())
}

impl EngineHandle {
    /// Queues `req`. Resolves once the engine took it (the error names a bad
    /// field, a prompt over the context, a busy engine...). `Busy` at once
    /// when the engine's whole share of submits is already waiting for it.
    pub async fn submit(&self, req: Request) -> Result<RequestStream> {
        let slot = PendingSlot::take(&self.shared)?;
        let (reply, reply_rx) = oneshot::channel();
        let (events, rx) = mpsc::unbounded();
        self.tx
            .unbounded_send(Command::Submit {
                req: Box::new(req),
                reply,
                events,
                _slot: slot,
            })
            .map_err(|_| stopped())?;
        let (id, prompt_tokens) = reply_rx.await.map_err(|_| stopped())??;
        Ok(RequestStream {
            id,
            prompt_tokens,
            rx,
        })
    }

    /// [`EngineHandle::submit`], waiting on this thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn submit_blocking(&self, req: Request) -> Result<RequestStream> {
        pollster::block_on(self.submit(req))
    }

    /// Attaches a draft model (see [`Engine::attach_draft`]); fails while
    /// requests run.
    pub async fn attach_draft(&self, draft: Engine) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .unbounded_send(Command::AttachDraft(Box::new(draft), reply))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Aborts one request (its choices end as cancelled; the stream still
    /// delivers their `Finished` events). Dropping its stream does the same.
    pub fn abort(&self, id: RequestId) {
        let _ = self.tx.unbounded_send(Command::Abort(id));
    }

    /// Aborts every request in flight (each ends as cancelled).
    pub fn abort_all(&self) {
        let _ = self.tx.unbounded_send(Command::AbortAll);
    }

    /// Aborts everything, refuses new requests and ends the driver once the
    /// aborted requests are retired.
    pub fn shutdown(&self) {
        let _ = self.tx.unbounded_send(Command::Shutdown);
    }

    /// False once the driver has ended (shut down, or a panic).
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// The model's limits and the engine's state after its latest step.
    pub fn info(&self) -> EngineInfo {
        self.shared
            .info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Clears `alive` when the driver ends, by return or by panic.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

/// The engine's thread; [`EngineThread::shutdown`] stops and joins it.
#[cfg(not(target_arch = "wasm32"))]
pub struct EngineThread {
    handle: EngineHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(not(target_arch = "wasm32"))]
impl EngineThread {
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Ends every request, stops the thread and waits for it.
    pub fn shutdown(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the engine thread panicked");
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for EngineThread {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.shutdown();
            let _ = t.join();
        }
    }
}

impl Engine {
    /// Moves the engine into a driver future and returns the handle that
    /// feeds it. The future ends after [`EngineHandle::shutdown`], or when
    /// every handle is gone and no work is left.
    pub fn into_driver(self) -> (EngineHandle, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded();
        let max_pending = self
            .config()
            .max_sequences
            .map_or(DEFAULT_PENDING_SUBMITS, |m| m.max(1));
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            max_pending,
            info: Mutex::new(EngineInfo {
                context_length: self.model.config.max_position_embeddings,
                vocab_size: self.model.config.vocab_size,
                stats: self.stats(),
            }),
            alive: AtomicBool::new(true),
        });
        let handle = EngineHandle {
            tx,
            shared: shared.clone(),
        };
        let driver = Driver {
            engine: self,
            subs: HashMap::new(),
            stopping: false,
        };
        (handle, driver.run(rx, shared))
    }

    /// Runs the engine on a thread of its own.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn spawn(self) -> std::io::Result<EngineThread> {
        let (handle, driver) = self.into_driver();
        let thread = std::thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || pollster::block_on(driver))?;
        Ok(EngineThread {
            handle,
            thread: Some(thread),
        })
    }
}

struct Driver {
    engine: Engine,
    /// Each request's event channel and its choices not finished yet.
    subs: HashMap<RequestId, (mpsc::UnboundedSender<Event>, usize)>,
    stopping: bool,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, shared: Arc<Shared>) {
        let _guard = AliveGuard(shared.clone());
        loop {
            if !self.engine.has_work() {
                self.publish(&shared);
                if self.stopping {
                    break;
                }
                // Nothing to step: sleep until a command arrives.
                let next = std::future::poll_fn(|cx| Pin::new(&mut rx).poll_next(cx)).await;
                match next {
                    Some(cmd) => self.command(cmd),
                    None => break,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                self.command(cmd);
            }
            // Requests whose streams were dropped end at this step.
            for (&id, (tx, _)) in &self.subs {
                if tx.is_closed() {
                    self.engine.abort(id);
                }
            }
            if self.engine.has_work() {
                for out in self.engine.step().await {
                    self.route(out);
                }
            }
            self.publish(&shared);
        }
        tracing::debug!("engine driver done");
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { reply, .. } if self.stopping => {
                let _ = reply.send(Err(HearthError::Stopped(
                    "the engine is shutting down".into(),
                )));
            }
            Command::Submit {
                req, reply, events, ..
            } => {
                let choices = req.n;
                match self.engine.add_request(*req) {
                    Ok((id, prompt_tokens)) => {
                        if reply.send(Ok((id, prompt_tokens))).is_err() {
                            // The caller is gone already.
                            self.engine.abort(id);
                        }
                        self.subs.insert(id, (events, choices));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::AttachDraft(draft, reply) => {
                let _ = reply.send(self.engine.attach_draft(*draft));
            }
            Command::Abort(id) => self.engine.abort(id),
            Command::AbortAll => self.engine.abort_all(),
            Command::Shutdown => {
                self.stopping = true;
                self.engine.abort_all();
            }
        }
    }

    fn route(&mut self, out: Output) {
        let id = out.request();
        let Some((tx, open)) = self.subs.get_mut(&id) else {
            return;
        };
        let event = match out {
            Output::Token { choice, token, .. } => Event::Token { choice, token },
            Output::Embedding { embedding, .. } => Event::Embedding(embedding),
            Output::Finished { choice, finish, .. } => {
                *open -= 1;
                Event::Finished { choice, finish }
            }
            Output::Failed { error, .. } => {
                *open = 0;
                Event::Failed(error)
            }
        };
        let gone = tx.unbounded_send(event).is_err();
        if *open == 0 {
            // Dropping the sender ends the stream.
            self.subs.remove(&id);
        } else if gone {
            self.engine.abort(id);
        }
    }

    fn publish(&self, shared: &Shared) {
        let stats = self.engine.stats();
        shared.info.lock().unwrap_or_else(|p| p.into_inner()).stats = stats;
    }
}
