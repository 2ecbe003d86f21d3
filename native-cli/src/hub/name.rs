//! What a `--model` value names: a local file or directory, or a model on
//! the Hugging Face hub (`ORG/REPO`, `ORG/REPO:QUANT`, `ORG/REPO/FILE.gguf`).

use std::path::{Path, PathBuf};

/// A `--model` (or `--draft-model`, `pull`) value, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum ModelSpec {
    Local(PathBuf),
    Hub(HubName),
}

/// A model on the hub and which of its files to take.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct HubName {
    /// `ORG/REPO`.
    pub repo: String,
    pub pick: Pick,
}

#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Pick {
    /// The repo's GGUF at the default quantization, else its safetensors set.
    Auto,
    /// The GGUF of this quantization (`ORG/REPO:Q4_K_M`).
    Quant(String),
    /// This file of the repo (`ORG/REPO/sub/dir/FILE.gguf`).
    File(String),
}

impl std::fmt::Display for HubName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pick {
            Pick::Auto => write!(f, "{}", self.repo),
            Pick::Quant(q) => write!(f, "{}:{q}", self.repo),
            Pick::File(p) => write!(f, "{}/{p}", self.repo),
        }
    }
}

/// An existing local path always wins; otherwise a value shaped like a hub
/// name is one; anything else stays a (missing) local path, so that its
/// error names the file.
pub fn classify(value: &Path) -> ModelSpec {
    classify_given(value, value.exists())
}

fn classify_given(value: &Path, exists: bool) -> ModelSpec {
    let local = || ModelSpec::Local(value.to_path_buf());
    if exists {
        return local();
    }
    match value.to_str().and_then(parse_hub_name) {
        Some(name) => ModelSpec::Hub(name),
        None => local(),
    }
}

/// Hub repo ids are `[A-Za-z0-9._-]` segments that don't start with `.` or `-`.
fn is_id_segment(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['.', '-'])
        && !s.ends_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn has_model_file_ext(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.ends_with(".gguf") || l.ends_with(".safetensors")
}

/// `ORG/REPO`, `ORG/REPO:QUANT` or `ORG/REPO/PATH.gguf`; `None` for anything
/// else (absolute or dotted paths, one segment, `dir/file.gguf`).
pub fn parse_hub_name(s: &str) -> Option<HubName> {
    if s.contains('\\') || s.starts_with(['/', '.', '~']) {
        return None;
    }
    let mut parts = s.splitn(3, '/');
    let org = parts.next()?;
    let repo_part = parts.next()?;
    let file = parts.next();
    if !is_id_segment(org) {
        return None;
    }
    match file {
        Some(file) => {
            let ok = is_id_segment(repo_part)
                && file.to_ascii_lowercase().ends_with(".gguf")
                && file.split('/').all(|seg| !seg.is_empty() && seg != "..");
            ok.then(|| HubName {
                repo: format!("{org}/{repo_part}"),
                pick: Pick::File(file.to_string()),
            })
        }
        None => {
            let (repo, pick) = match repo_part.split_once(':') {
                Some((r, q))
                    if !q.is_empty()
                        && q.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    (r, Pick::Quant(q.to_string()))
                }
                Some(_) => return None,
                None => (repo_part, Pick::Auto),
            };
            // `models/foo.gguf` is a missing file, not a repo called foo.gguf.
            (is_id_segment(repo) && !has_model_file_ext(repo)).then(|| HubName {
                repo: format!("{org}/{repo}"),
                pick,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo: &str, pick: Pick) -> Option<HubName> {
        Some(HubName {
            repo: repo.into(),
            pick,
        })
    }

    #[test]
    fn hub_names_in_their_three_shapes() {
        assert_eq!(
            parse_hub_name("bartowski/SmolLM2-135M-Instruct-GGUF"),
            hub("bartowski/SmolLM2-135M-Instruct-GGUF", Pick::Auto)
        );
        assert_eq!(
            parse_hub_name("Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m"),
            hub(
                "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
                Pick::Quant("q4_k_m".into())
            )
        );
        assert_eq!(
            parse_hub_name("org/repo/Q4_K_M/model-00001-of-00002.gguf"),
            hub(
                "org/repo",
                Pick::File("Q4_K_M/model-00001-of-00002.gguf".into())
            )
        );
    }

    #[test]
    fn paths_are_not_hub_names() {
        for s in [
            "model.gguf",
            "./org/repo",
            "/abs/org/repo",
            "../x/y",
            "~/x/y",
            "models/foo.gguf",
            "models/foo.safetensors",
            "org/repo/config.json",
            "org/repo/../../x.gguf",
            "org/repo:",
            "org/repo:Q4/K",
            "org/-repo",
            "a\\b/c",
            "org/repo//x.gguf",
        ] {
            assert_eq!(parse_hub_name(s), None, "{s}");
        }
    }

    #[test]
    fn an_existing_path_wins_over_a_hub_name() {
        let p = Path::new("org/repo");
        assert_eq!(classify_given(p, true), ModelSpec::Local(p.into()));
        assert_eq!(
            classify_given(p, false),
            ModelSpec::Hub(HubName {
                repo: "org/repo".into(),
                pick: Pick::Auto
            })
        );
        let missing = Path::new("models/foo.gguf");
        assert_eq!(
            classify_given(missing, false),
            ModelSpec::Local(missing.into())
        );
    }
}
