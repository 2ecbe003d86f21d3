//! The hub client as the Python tools set it up: the same cache folder
//! (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`), endpoint
//! (`HF_ENDPOINT`) and token (`HF_TOKEN`, else the file `hf auth login`
//! writes), and hub errors turned into messages that say what to do.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::Cache;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home() -> Result<PathBuf> {
    if let Some(h) = env("HF_HOME") {
        return Ok(h.into());
    }
    let cache = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".cache")))
        .context("no home directory for the Hugging Face cache; set HF_HOME")?;
    Ok(cache.join("huggingface"))
}

/// The hub cache folder (`models--ORG--REPO/{blobs,refs,snapshots}` inside).
pub fn cache_dir() -> Result<PathBuf> {
    match env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
        Some(c) => Ok(c.into()),
        None => Ok(hf_home()?.join("hub")),
    }
}

fn token() -> Result<Option<String>> {
    if let Some(t) = env("HF_TOKEN") {
        return Ok(Some(t.trim().to_string()));
    }
    let file = match env("HF_TOKEN_PATH") {
        Some(p) => PathBuf::from(p),
        None => hf_home()?.join("token"),
    };
    Ok(std::fs::read_to_string(file)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

pub fn endpoint() -> String {
    env("HF_ENDPOINT")
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
}

pub fn api() -> Result<Api> {
    ApiBuilder::from_cache(Cache::new(cache_dir()?))
        .with_endpoint(endpoint())
        .with_token(token()?)
        // Retried by `download` instead: hf-hub's own retry loop reports a
        // failure after its last attempt even when that attempt succeeded.
        .with_retries(0)
        .with_progress(false)
        .with_user_agent("hearth", env!("CARGO_PKG_VERSION"))
        .build()
        .context("setting up the Hugging Face hub client")
}

/// Whether `e` is a connection failure (no answer), rather than an answer.
pub fn is_unreachable(e: &ApiError) -> bool {
    match e {
        ApiError::RequestError(r) => matches!(**r, ureq::Error::Transport(_)),
        ApiError::TooManyRetries(inner) => is_unreachable(inner),
        _ => false,
    }
}

/// Whether trying again may help: no answer, or a body cut off midway.
pub fn is_transient(e: &ApiError) -> bool {
    is_unreachable(e) || matches!(e, ApiError::IoError(_))
}

/// `HF_HUB_OFFLINE=1`: only what the cache holds, no requests.
pub fn offline() -> bool {
    env("HF_HUB_OFFLINE").is_some_and(|v| !matches!(v.as_str(), "0" | "false" | "no"))
}

/// A hub error as a message naming `what` (`ORG/REPO` or a file of it) and
/// what to do about it.
pub fn explain(e: ApiError, repo: &str, file: Option<&str>) -> anyhow::Error {
    let ep = endpoint();
    let what = match file {
        Some(f) => format!("{repo}/{f}"),
        None => repo.to_string(),
    };
    let (code, resp) = match e {
        ApiError::RequestError(r) => match *r {
            ureq::Error::Status(code, resp) => (code, resp),
            ureq::Error::Transport(t) => {
                return anyhow!(
                    "cannot reach the Hugging Face hub at {ep} for {what}: {t} (a mirror can be set with HF_ENDPOINT)"
                )
            }
        },
        ApiError::TooManyRetries(inner) => {
            return anyhow!(
                "downloading {what} from {ep} kept failing ({inner}); run the command again to resume it"
            )
        }
        ApiError::IoError(io) if file.is_some() => {
            return anyhow!(
                "the download of {what} from {ep} broke off ({io}); run the command again to resume it"
            )
        }
        other => return anyhow!("{what} from {ep}: {other}"),
    };
    let hub_code = resp.header("x-error-code").unwrap_or_default().to_string();
    let hub_msg = resp
        .header("x-error-message")
        .map(|m| format!(" (the hub says: {m})"))
        .unwrap_or_default();
    let authed = token().ok().flatten().is_some();
    match code {
        401 if hub_code == "GatedRepo" || authed => anyhow!(
            "{repo} on {ep} refused access (HTTP 401){hub_msg}: it is gated or private, and HF_TOKEN \
             must hold a token of an account that has access (accept its conditions at {ep}/{repo})"
        ),
        401 => anyhow!(
            "{repo} was not found on {ep}, or it is private or gated (HTTP 401){hub_msg}: check the \
             name, or set HF_TOKEN to a token with access (https://huggingface.co/settings/tokens)"
        ),
        403 => anyhow!(
            "{repo} on {ep} is gated (HTTP 403){hub_msg}: accept its conditions at {ep}/{repo} with \
             the account whose token HF_TOKEN holds"
        ),
        404 if file.is_some() && hub_code != "RepoNotFound" => {
            anyhow!("{repo} on {ep} has no file {}{hub_msg}", file.unwrap_or_default())
        }
        404 => anyhow!("{repo} was not found on {ep} (HTTP 404){hub_msg}: check the name"),
        416 => anyhow!(
            "the partial download of {what} no longer fits the hub's file (HTTP 416); delete the \
             `.part` file in {} and run again",
            cache_dir().map(|c| c.display().to_string()).unwrap_or_default()
        ),
        c => anyhow!("{what} from {ep}: HTTP {c}{hub_msg}"),
    }
}
