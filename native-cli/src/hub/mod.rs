//! Models named on the Hugging Face hub: `hearth pull NAME`, and the same
//! names wherever a model path is accepted. Files land in the hub's shared
//! cache layout, so what other tools fetched is reused and vice versa.

mod client;
mod download;
pub mod name;
mod select;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use name::{HubName, ModelSpec, Pick};
use select::Selection;

/// The local path a `--model` value stands for: an existing path (or a
/// missing one, for the loader to report) as it is, a hub name downloaded
/// first if the cache lacks it.
pub fn resolve(value: &Path) -> Result<PathBuf> {
    match name::classify(value) {
        ModelSpec::Local(p) => Ok(p),
        ModelSpec::Hub(n) => pull(&n),
    }
}

/// The files of the repo, from the hub, or from the cache's snapshot when
/// offline or when the hub cannot be reached (then with why, for errors).
fn list_files(
    api: &hf_hub::api::sync::Api,
    repo: &str,
) -> Result<(Vec<String>, Option<&'static str>)> {
    if client::offline() {
        let files = cached_listing(repo)?
            .with_context(|| format!("HF_HUB_OFFLINE is set and the cache has no {repo}"))?;
        return Ok((files, Some("HF_HUB_OFFLINE is set")));
    }
    match api.model(repo.to_string()).info() {
        Ok(info) => Ok((
            info.siblings.into_iter().map(|s| s.rfilename).collect(),
            None,
        )),
        Err(e) if client::is_unreachable(&e) => match cached_listing(repo)? {
            Some(files) => {
                eprintln!("hearth: the hub is unreachable ({e}); using the cached copy of {repo}");
                Ok((files, Some("the hub is unreachable")))
            }
            None => Err(client::explain(e, repo, None)),
        },
        Err(e) => Err(client::explain(e, repo, None)),
    }
}

/// The files of the snapshot that the cache's `refs/main` names.
fn cached_listing(repo: &str) -> Result<Option<Vec<String>>> {
    let dir = client::cache_dir()?.join(format!("models--{}", repo.replace('/', "--")));
    let Ok(commit) = std::fs::read_to_string(dir.join("refs").join("main")) else {
        return Ok(None);
    };
    let root = dir.join("snapshots").join(commit.trim());
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(&root) {
                files.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files.sort();
    Ok((!files.is_empty()).then_some(files))
}

/// Downloads what `name` picks (unless cached) and returns the path to
/// load: the GGUF (its first shard), or the snapshot folder of a
/// safetensors set.
pub fn pull(name: &HubName) -> Result<PathBuf> {
    let api = client::api()?;
    let repo = name.repo.as_str();
    let (files, cached) = match &name.pick {
        Pick::File(_) => (Vec::new(), None),
        _ => list_files(&api, repo)?,
    };
    let selection = select::select(repo, &files, &name.pick).map_err(|e| match cached {
        Some(why) => e.context(format!("{why}, so only the cache's files of {repo} count")),
        None => e,
    })?;
    let (wanted, gguf) = match selection {
        Selection::Gguf {
            files,
            quant,
            others,
        } => {
            if name.pick == Pick::Auto {
                let q = quant.as_deref().unwrap_or("the GGUF");
                let also = if others.is_empty() {
                    String::new()
                } else {
                    format!("; also {} (name one as {repo}:QUANT)", others.join(", "))
                };
                eprintln!("hearth: {repo}: {q} ({}){also}", files[0]);
            }
            (files, true)
        }
        Selection::Safetensors { files } => {
            eprintln!(
                "hearth: {repo}: no GGUF; taking its safetensors ({} files)",
                files.len()
            );
            (files, false)
        }
    };
    let mut paths = Vec::with_capacity(wanted.len());
    for f in &wanted {
        paths.push(download::fetch(&api, repo, f)?);
    }
    if gguf {
        return Ok(paths.swap_remove(0));
    }
    paths[0]
        .parent()
        .map(Path::to_path_buf)
        .context("a cached file without a folder")
}
