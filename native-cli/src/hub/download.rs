//! One file of a hub repo into the cache: reused when the cache has it,
//! else downloaded with a progress bar on stderr (resuming a partial
//! download), and checked against the hub's sha256 before it is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::Api;
use hf_hub::{Cache, Repo};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use super::client;

/// Further attempts after a download broke off; each resumes where the last
/// stopped (and a later run resumes too: the partial file stays).
const RETRIES: usize = 2;

/// The bar hf-hub drives; indicatif hides it when stderr is not a terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new(label: &str) -> Bar {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Bar(bar)
    }
}

impl hf_hub::api::Progress for Bar {
    fn init(&mut self, size: usize, _filename: &str) {
        self.0.set_length(size as u64);
        self.0.set_position(0);
    }

    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }

    fn finish(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The cache's copy of `repo`'s `file` (a snapshot link into `blobs/`).
pub fn cached(repo: &str, file: &str) -> Result<Option<PathBuf>> {
    let cache = Cache::new(client::cache_dir()?);
    Ok(cache.repo(Repo::model(repo.to_string())).get(file))
}

/// `repo`'s `file` in the cache, downloaded first when it is not there.
pub fn fetch(api: &Api, repo: &str, file: &str) -> Result<PathBuf> {
    if let Some(p) = cached(repo, file)? {
        return Ok(p);
    }
    if client::offline() {
        bail!("HF_HUB_OFFLINE is set and the cache has no {repo}/{file}");
    }
    let handle = api.model(repo.to_string());
    let mut attempt = 0;
    let path = loop {
        match handle.download_with_progress(file, Bar::new(file)) {
            Ok(p) => break p,
            Err(e) if attempt < RETRIES && client::is_transient(&e) => {
                attempt += 1;
                eprintln!(
                    "hearth: {repo}/{file}: {e}; resuming (attempt {})",
                    attempt + 1
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(client::explain(e, repo, Some(file))),
        }
    };
    verify(&path, repo, file)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!("hearth: downloaded {repo}/{file} ({})", HumanBytes(size));
    Ok(path)
}

/// The cache names a blob after the hub's etag, which for large (LFS)
/// files is their sha256: a download whose bytes hash otherwise is deleted,
/// so that neither this nor another tool ever uses it.
fn verify(snapshot: &Path, repo: &str, file: &str) -> Result<()> {
    let blob = std::fs::canonicalize(snapshot)
        .with_context(|| format!("resolving {}", snapshot.display()))?;
    let etag = blob
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let is_sha256 = etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_sha256 {
        return Ok(());
    }
    let got = crate::fetch::sha256_file(&blob)?;
    if got != etag {
        let _ = std::fs::remove_file(snapshot);
        let _ = std::fs::remove_file(&blob);
        bail!(
            "checksum mismatch for {repo}/{file}: the hub's sha256 is {etag}, the download's is \
             {got}; the bad download was deleted, run the command again to fetch it anew"
        );
    }
    Ok(())
}
