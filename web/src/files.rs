//! Which model a set of picked files is: one GGUF, the shards of a split
//! GGUF, or a Hugging Face set (config.json, tokenizer.json, safetensors shards).

use hearth::model::gguf::{GgufFile, GgufModel};
use hearth::model::hf::{shard_names_from_index, HfModel};
use hearth::model::load::{FileBytes, LoadedModel};
use hearth::{HearthError, Result};
use web_sys::Blob;

use crate::blob_file::BlobFile;

pub fn open(files: Vec<(String, Blob)>) -> Result<LoadedModel> {
    if files.is_empty() {
        return Err(HearthError::InvalidRequest("no model file given".into()));
    }
    let is_gguf = |n: &str| n.to_ascii_lowercase().ends_with(".gguf");
    let ggufs = files.iter().filter(|(n, _)| is_gguf(n)).count();
    if ggufs > 0 {
        if ggufs < files.len() {
            return Err(HearthError::InvalidRequest(format!(
                "give .gguf files on their own: one model, or every shard of a split one \
                 ({ggufs} .gguf among {} files were given)",
                files.len()
            )));
        }
        if let [(name, blob)] = files.as_slice() {
            return open_gguf(name, blob);
        }
        return open_split_gguf(&files);
    }
    if files.len() == 1 && !files[0].0.ends_with(".json") && !files[0].0.ends_with(".safetensors") {
        // A renamed or extension-less download: trust the magic.
        let (name, blob) = &files[0];
        return open_gguf(name, blob);
    }
    open_hf(files)
}

/// A Blob read in slices, as the loaders take their files.
fn ranged(name: &str, blob: &Blob) -> Result<FileBytes> {
    Ok(FileBytes::Ranged(Box::new(BlobFile::new(
        name,
        blob.clone(),
    )?)))
}

fn open_gguf(name: &str, blob: &Blob) -> Result<LoadedModel> {
    LoadedModel::from_gguf(GgufModel::new(GgufFile::parse(ranged(name, blob)?)?)?, name)
}

/// The shards of a split GGUF (llama.cpp's `gguf-split`), in any order.
fn open_split_gguf(files: &[(String, Blob)]) -> Result<LoadedModel> {
    let mut shards = Vec::with_capacity(files.len());
    for (name, blob) in files {
        shards.push((name.clone(), GgufFile::parse(ranged(name, blob)?)?));
    }
    let joined = GgufFile::join(shards)?;
    let shown = format!("{} (and {} more shards)", files[0].0, files.len() - 1);
    LoadedModel::from_gguf(GgufModel::new(joined)?, &shown)
}

fn open_hf(files: Vec<(String, Blob)>) -> Result<LoadedModel> {
    let text = |name: &str| -> Result<Option<String>> {
        match files.iter().find(|(n, _)| n == name) {
            Some((n, b)) => BlobFile::new(n, b.clone())?.read_text().map(Some),
            None => Ok(None),
        }
    };
    let config = text("config.json")?.ok_or_else(|| {
        HearthError::InvalidRequest(
            "pick either one .gguf file or a Hugging Face model's files: config.json, \
             tokenizer.json and the .safetensors file(s) (config.json is missing)"
                .into(),
        )
    })?;
    let shard_names = match text("model.safetensors.index.json")? {
        Some(index) => shard_names_from_index(&index)?,
        None => {
            let mut v: Vec<String> = files
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| n.ends_with(".safetensors"))
                .collect();
            v.sort();
            v
        }
    };
    if shard_names.is_empty() {
        return Err(HearthError::InvalidRequest(
            "config.json was given without any .safetensors file".into(),
        ));
    }
    let mut shards = Vec::with_capacity(shard_names.len());
    for name in shard_names {
        let (_, blob) = files.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            HearthError::InvalidRequest(format!(
                "the index names shard `{name}`, which was not among the picked files"
            ))
        })?;
        let bytes = ranged(&name, blob)?;
        shards.push((name, bytes));
    }
    let tokenizer_json = text("tokenizer.json")?.ok_or_else(|| {
        HearthError::Tokenizer("tokenizer.json is missing from the picked files".into())
    })?;
    let hf = HfModel::from_files(&config, shards)?.with_tokenizer(
        tokenizer_json,
        text("tokenizer_config.json")?,
        text("generation_config.json")?,
    );
    LoadedModel::from_hf(hf, "the picked files")
}
