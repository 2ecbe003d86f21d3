//! Which files of a hub repo a name means: the GGUF of a quantization (every
//! shard of a split one), else the safetensors set with its config and
//! tokenizer files.

use anyhow::{bail, Result};

use super::name::Pick;

/// Quantizations in the order they are taken when a name gives none: the
/// usual 4-bit sweet spot first, then the closest in size and quality.
const DEFAULT_ORDER: &[&str] = &[
    "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1", "Q6_K", "Q8_0", "BF16",
    "F16", "F32",
];

/// The files to download and how to hand them to the loader.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    /// A GGUF: one file, or every shard of a split one (first shard first).
    Gguf {
        files: Vec<String>,
        quant: Option<String>,
        /// The other quantizations the repo offers (for the note on stderr).
        others: Vec<String>,
    },
    /// A Hugging Face model directory: the snapshot holding these files.
    Safetensors { files: Vec<String> },
}

/// `(prefix, index, count)` of a llama.cpp split GGUF,
/// `PREFIX-00001-of-00003.gguf`.
pub fn shard_of(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name
        .len()
        .checked_sub(5)
        .filter(|&i| name.is_char_boundary(i) && name[i..].eq_ignore_ascii_case(".gguf"))
        .map(|i| &name[..i])?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(count) || !digits(index) {
        return None;
    }
    let (i, n) = (index.parse().ok()?, count.parse().ok()?);
    (1..=n).contains(&i).then_some((prefix, i, n))
}

/// Every shard's name of the split GGUF that `name` belongs to (the digits
/// padded as `name` pads them); just `name` when it is not split.
pub fn shard_set(name: &str) -> Vec<String> {
    let Some((prefix, _, n)) = shard_of(name) else {
        return vec![name.to_string()];
    };
    let width = name.rsplit_once("-of-").map_or(5, |(_, c)| c.len() - 5);
    (1..=n)
        .map(|i| format!("{prefix}-{i:0width$}-of-{n:0width$}.gguf"))
        .collect()
}

/// A quantization tag in `Q4_K_M`, `IQ4_XS`, `Q8_0`, `F16`, `BF16` shape.
fn is_quant(t: &str) -> bool {
    if matches!(t, "F16" | "BF16" | "F32" | "FP16" | "FP32") {
        return true;
    }
    let body = t
        .strip_prefix("IQ")
        .or_else(|| t.strip_prefix("TQ"))
        .or_else(|| t.strip_prefix('Q'));
    let Some(body) = body else { return false };
    let mut parts = body.split('_');
    let bits = parts.next().unwrap_or_default();
    !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The quantization a GGUF's path names (upper case), e.g.
/// `Qwen2.5-0.5B-Instruct-Q4_K_M.gguf` → `Q4_K_M`, `Q8_0/model-00001-of-00002.gguf` → `Q8_0`.
pub fn quant_of(path: &str) -> Option<String> {
    let stem = shard_of(path).map_or(path, |(p, _, _)| p);
    let stem = stem.strip_suffix(".gguf").unwrap_or(stem);
    let upper = stem.to_ascii_uppercase();
    // The last tag wins: `model-q8_0-Q4_K_M` means Q4_K_M.
    upper.split(['-', '.', '/']).rev().find_map(|token| {
        let starts = std::iter::once(0).chain(token.match_indices('_').map(|(i, _)| i + 1));
        starts
            .map(|s| &token[s..])
            .find(|t| is_quant(t))
            .map(str::to_string)
    })
}

/// The GGUF models of a repo: single files and complete shard sets, by their
/// first file; vision projectors (`mmproj*`) are not models of their own.
fn gguf_units(files: &[String]) -> Vec<Vec<String>> {
    let mut units: Vec<Vec<String>> = Vec::new();
    for f in files {
        let base = f.rsplit('/').next().unwrap_or(f);
        if !f.to_ascii_lowercase().ends_with(".gguf")
            || base.to_ascii_lowercase().starts_with("mmproj")
        {
            continue;
        }
        match shard_of(f) {
            None => units.push(vec![f.clone()]),
            Some((_, 1, _)) => {
                let set = shard_set(f);
                if set.iter().all(|s| files.contains(s)) {
                    units.push(set);
                }
            }
            Some(_) => {}
        }
    }
    units.sort();
    units
}

/// What a name without a file picks from a repo's `files`.
pub fn select(repo: &str, files: &[String], pick: &Pick) -> Result<Selection> {
    if let Pick::File(f) = pick {
        return Ok(Selection::Gguf {
            files: shard_set(f),
            quant: quant_of(f),
            others: Vec::new(),
        });
    }
    let units = gguf_units(files);
    if units.is_empty() {
        if let Pick::Quant(q) = pick {
            bail!("{repo} has no GGUF files, so there is no `:{q}` to choose (name the repo alone for its safetensors)");
        }
        return safetensors_set(repo, files);
    }
    let quants: Vec<Option<String>> = units.iter().map(|u| quant_of(&u[0])).collect();
    let mut available: Vec<String> = Vec::new();
    for (q, u) in quants.iter().zip(&units) {
        let label = q.clone().unwrap_or_else(|| u[0].clone());
        if !available.contains(&label) {
            available.push(label);
        }
    }
    let chosen = match pick {
        Pick::Quant(q) => {
            let want = q.to_ascii_uppercase();
            quants
                .iter()
                .position(|x| x.as_deref() == Some(want.as_str()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{repo} has no {want} GGUF; it has: {}",
                        available.join(", ")
                    )
                })?
        }
        _ => DEFAULT_ORDER
            .iter()
            .find_map(|d| quants.iter().position(|x| x.as_deref() == Some(*d)))
            .unwrap_or(0),
    };
    let quant = quants[chosen].clone();
    let label = quant.clone().unwrap_or_else(|| units[chosen][0].clone());
    Ok(Selection::Gguf {
        files: units[chosen].clone(),
        quant,
        others: available.into_iter().filter(|a| *a != label).collect(),
    })
}

/// The top-level files a Hugging Face model directory needs: the weights,
/// their index, config and tokenizer files (not READMEs, ONNX or other
/// formats' copies in subfolders).
fn safetensors_set(repo: &str, files: &[String]) -> Result<Selection> {
    let wanted = |f: &&String| {
        !f.contains('/')
            && (f.ends_with(".safetensors")
                || f.ends_with(".json")
                || matches!(f.as_str(), "tokenizer.model" | "merges.txt" | "vocab.txt"))
    };
    let files: Vec<String> = files.iter().filter(wanted).cloned().collect();
    if !files.iter().any(|f| f.ends_with(".safetensors")) {
        bail!("{repo} has neither GGUF nor safetensors weights at its top level");
    }
    if !files.iter().any(|f| f == "config.json") {
        bail!("{repo} has safetensors weights but no config.json");
    }
    Ok(Selection::Safetensors { files })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quant_tags_are_read_from_file_names() {
        for (f, q) in [
            ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", Some("Q4_K_M")),
            ("smollm2-135m-instruct-q8_0.gguf", Some("Q8_0")),
            ("SmolLM2-135M-Instruct.Q4_1.gguf", Some("Q4_1")),
            ("model-IQ4_XS.gguf", Some("IQ4_XS")),
            ("model-bf16-00001-of-00002.gguf", Some("BF16")),
            ("Q5_K_M/model-00001-of-00003.gguf", Some("Q5_K_M")),
            ("model_Q6_K.gguf", Some("Q6_K")),
            ("ggml-model-f16.gguf", Some("F16")),
            ("model.gguf", None),
            ("Qwen3-4B.gguf", None),
        ] {
            assert_eq!(quant_of(f).as_deref(), q, "{f}");
        }
    }

    #[test]
    fn shard_sets_are_named_from_any_shard() {
        assert_eq!(
            shard_of("m-Q4_K_M-00002-of-00003.gguf"),
            Some(("m-Q4_K_M", 2, 3))
        );
        assert_eq!(shard_of("m-00004-of-00003.gguf"), None);
        assert_eq!(shard_of("m-Q4_K_M.gguf"), None);
        assert_eq!(
            shard_set("d/m-00002-of-00003.gguf"),
            names(&[
                "d/m-00001-of-00003.gguf",
                "d/m-00002-of-00003.gguf",
                "d/m-00003-of-00003.gguf"
            ])
        );
    }

    #[test]
    fn the_default_quant_is_q4_k_m_then_the_next_best() {
        let files = names(&[
            "README.md",
            "m-Q2_K.gguf",
            "m-Q8_0.gguf",
            "m-Q4_K_M.gguf",
            "mmproj-m-f16.gguf",
        ]);
        let s = select("o/r", &files, &Pick::Auto).unwrap();
        assert_eq!(
            s,
            Selection::Gguf {
                files: names(&["m-Q4_K_M.gguf"]),
                quant: Some("Q4_K_M".into()),
                others: names(&["Q2_K", "Q8_0"]),
            }
        );
        let files = names(&["m-Q2_K.gguf", "m-F16.gguf", "m-Q8_0.gguf"]);
        let Selection::Gguf { files, .. } = select("o/r", &files, &Pick::Auto).unwrap() else {
            panic!()
        };
        assert_eq!(files, names(&["m-Q8_0.gguf"]));
    }

    #[test]
    fn a_named_quant_is_taken_or_the_error_lists_the_choices() {
        let files = names(&[
            "m-Q4_K_M.gguf",
            "m-Q8_0-00001-of-00002.gguf",
            "m-Q8_0-00002-of-00002.gguf",
        ]);
        let Selection::Gguf { files: got, .. } =
            select("o/r", &files, &Pick::Quant("q8_0".into())).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            got,
            names(&["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"])
        );
        let e = select("o/r", &files, &Pick::Quant("Q5_K_M".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Q5_K_M") && e.contains("Q4_K_M, Q8_0"), "{e}");
    }

    #[test]
    fn an_incomplete_shard_set_is_not_offered() {
        let files = names(&["m-Q8_0-00001-of-00002.gguf", "m-Q4_0.gguf"]);
        let Selection::Gguf { files: got, .. } = select("o/r", &files, &Pick::Auto).unwrap() else {
            panic!()
        };
        assert_eq!(got, names(&["m-Q4_0.gguf"]));
    }

    #[test]
    fn without_gguf_the_safetensors_set_is_taken() {
        let files = names(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "onnx/model.onnx",
            "onnx/config.json",
        ]);
        assert_eq!(
            select("o/r", &files, &Pick::Auto).unwrap(),
            Selection::Safetensors {
                files: names(&["config.json", "model.safetensors", "tokenizer.json"])
            }
        );
        let e = select("o/r", &files, &Pick::Quant("Q4_0".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no GGUF"), "{e}");
        let e = select("o/r", &names(&["README.md"]), &Pick::Auto)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither GGUF nor safetensors"), "{e}");
    }
}
