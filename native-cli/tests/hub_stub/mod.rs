//! A stand-in for the Hugging Face hub on loopback, serving what hf-hub's
//! client asks for: the repo listing (`GET /api/models/ORG/REPO[/revision/R]`)
//! and file downloads (`GET /ORG/REPO/resolve/R/FILE`, with the etag,
//! commit and linked-size headers and byte ranges). Switches cut downloads
//! midway, corrupt their bytes, and gate a repo behind a token; every
//! request is logged for the tests to count.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

pub struct StubFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

pub struct StubRepo {
    pub id: String,
    pub files: Vec<StubFile>,
    /// The bearer token this (gated) repo wants; `None`: open to all.
    pub token: Option<String>,
}

impl StubRepo {
    pub fn new(id: &str, files: &[(&str, Vec<u8>)]) -> StubRepo {
        StubRepo {
            id: id.into(),
            files: files
                .iter()
                .map(|(p, b)| StubFile {
                    path: p.to_string(),
                    bytes: b.clone(),
                })
                .collect(),
            token: None,
        }
    }

    pub fn gated(mut self, token: &str) -> StubRepo {
        self.token = Some(token.into());
        self
    }
}

/// One request the stub answered.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

struct Shared {
    repos: Vec<StubRepo>,
    cuts_left: AtomicUsize,
    corrupt: AtomicBool,
    log: Mutex<Vec<Logged>>,
}

pub struct Hub {
    pub base: String,
    shared: Arc<Shared>,
}

pub fn sha256_hex(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

impl Hub {
    pub fn start(repos: Vec<StubRepo>) -> Hub {
        let shared = Arc::new(Shared {
            repos,
            cuts_left: AtomicUsize::new(0),
            corrupt: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/api/models/{org}/{repo}", get(listing))
            .route("/api/models/{org}/{repo}/revision/{rev}", get(listing))
            .route("/{org}/{repo}/resolve/{rev}/{*file}", get(resolve))
            .with_state(shared.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr: SocketAddr = listener.local_addr().unwrap();
                tx.send(addr).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().expect("the stub hub starts");
        Hub {
            base: format!("http://{addr}"),
            shared,
        }
    }

    /// The next `n` downloads send half their bytes and then drop the connection.
    pub fn cut_next(&self, n: usize) {
        self.shared.cuts_left.store(n, Ordering::SeqCst);
    }

    /// Downloads serve bytes that differ from the ones the headers' sha256 names.
    pub fn corrupt(&self, on: bool) {
        self.shared.corrupt.store(on, Ordering::SeqCst);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The logged requests for `repo`'s `file` (HEAD or GET, any range).
    pub fn file_requests(&self, repo: &str, file: &str) -> Vec<Logged> {
        let path = format!("/{repo}/resolve/main/{file}");
        self.log().into_iter().filter(|l| l.path == path).collect()
    }

    /// The logged requests for any file (not the listing).
    pub fn downloads(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.path.contains("/resolve/"))
            .collect()
    }
}

fn record(s: &Shared, method: &Method, path: String, headers: &HeaderMap) {
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.log.lock().unwrap().push(Logged {
        method: method.to_string(),
        path,
        range,
    });
}

/// An error as the hub answers it: status, `x-error-code`, message.
type HubError = (StatusCode, &'static str, &'static str);

fn hub_error((status, code, message): HubError) -> Response {
    (
        status,
        [("x-error-code", code), ("x-error-message", message)],
        message,
    )
        .into_response()
}

/// The repo `org/repo`, or the error the hub answers for it.
fn find<'a>(s: &'a Shared, id: &str, headers: &HeaderMap) -> Result<&'a StubRepo, HubError> {
    let repo = s.repos.iter().find(|r| r.id == id).ok_or((
        StatusCode::NOT_FOUND,
        "RepoNotFound",
        "Repository not found",
    ))?;
    if let Some(t) = &repo.token {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer != Some(t.as_str()) {
            return Err((
                StatusCode::UNAUTHORIZED,
                "GatedRepo",
                "Access to this model is restricted. You must be authenticated to access it.",
            ));
        }
    }
    Ok(repo)
}

async fn listing(
    State(s): State<Arc<Shared>>,
    Path(p): Path<Vec<(String, String)>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let id = format!("{}/{}", get("org"), get("repo"));
    record(&s, &method, format!("/api/models/{id}"), &headers);
    match find(&s, &id, &headers) {
        Ok(repo) => axum::Json(serde_json::json!({
            "id": id,
            "sha": COMMIT,
            "siblings": repo.files.iter().map(|f| serde_json::json!({"rfilename": f.path})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => hub_error(e),
    }
}

/// `bytes=A-B` or `bytes=A-` as a half-open range within `len`.
fn parse_range(h: &str, len: usize) -> Option<(usize, usize)> {
    let (a, b) = h.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = a.parse().ok()?;
    let end = if b.is_empty() {
        len
    } else {
        b.parse::<usize>().ok()? + 1
    };
    (start < end && end <= len).then_some((start, end))
}

async fn resolve(
    State(s): State<Arc<Shared>>,
    Path((org, repo, _rev, file)): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let id = format!("{org}/{repo}");
    record(&s, &method, format!("/{id}/resolve/main/{file}"), &headers);
    let repo = match find(&s, &id, &headers) {
        Ok(r) => r,
        Err(e) => return hub_error(e),
    };
    let Some(f) = repo.files.iter().find(|f| f.path == file) else {
        return hub_error((StatusCode::NOT_FOUND, "EntryNotFound", "Entry not found"));
    };
    let mut bytes = f.bytes.clone();
    let sha = sha256_hex(&bytes);
    if s.corrupt.load(Ordering::SeqCst) {
        if let Some(b) = bytes.last_mut() {
            *b ^= 0xff;
        }
    }
    let len = bytes.len();
    let (status, (start, end)) = match headers.get("range").and_then(|v| v.to_str().ok()) {
        Some(h) => match parse_range(h, len) {
            Some(r) => (StatusCode::PARTIAL_CONTENT, r),
            None => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        },
        None => (StatusCode::OK, (0, len)),
    };
    let mut resp = Response::builder()
        .status(status)
        .header("x-repo-commit", COMMIT)
        .header("accept-ranges", "bytes")
        .header("content-length", (end - start).to_string());
    // Large files live in LFS: their etag is a git blob id, the linked
    // etag their sha256. Small text files (here: JSON) are plain git blobs.
    if file.ends_with(".json") {
        resp = resp.header("etag", format!("\"{}\"", &sha[..40]));
    } else {
        resp = resp
            .header("etag", format!("\"{}\"", &sha[24..]))
            .header("x-linked-etag", format!("\"{sha}\""))
            .header("x-linked-size", len.to_string());
    }
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header("content-range", format!("bytes {start}-{}/{len}", end - 1));
    }
    if method == Method::HEAD {
        return resp.body(Body::empty()).unwrap();
    }
    let slice = Bytes::from(bytes[start..end].to_vec());
    // The probe for the size (`bytes=0-0`) is never cut; a real download is.
    let cut = slice.len() > 1
        && s.cuts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if !cut {
        return resp.body(Body::from(slice)).unwrap();
    }
    let half = slice.slice(..slice.len() / 2);
    let stream = futures_util::stream::unfold(0u8, move |state| {
        let half = half.clone();
        async move {
            match state {
                0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                1 => {
                    // Lets the first half leave before the connection drops.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Some((Err(std::io::Error::other("cut by the stub hub")), 2))
                }
                _ => None,
            }
        }
    });
    resp.body(Body::from_stream(stream)).unwrap()
}
