//! A GGUF file as a WeightSource: canonical names are GGUF's own.

use super::GgufFile;
use crate::model::{DType, HostTensor, ModelConfig, WeightSource};
use crate::text::vocab::GgufVocab;
use crate::Result;

#[derive(Debug)]
pub struct GgufModel {
    file: GgufFile,
    config: ModelConfig,
}

impl GgufModel {
    /// Parses the config from the file's metadata (errors for unknown
    /// architectures) and checks it against the tensors present. One shard
    /// of a split model on its own is an error, not a model missing tensors.
    pub fn new(file: GgufFile) -> Result<Self> {
        file.check_not_lone_shard()?;
        let config = file.config()?;
        file.check_config_tensors(&config)?;
        Ok(GgufModel { file, config })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Self::new(GgufFile::open(path)?)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::new(GgufFile::from_bytes(bytes)?)
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn vocab(&self) -> Result<GgufVocab> {
        self.file.vocab()
    }
}

impl WeightSource for GgufModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.file.has_tensor(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor<'_>> {
        self.file.tensor(name)
    }

    fn tensor_meta(&self, name: &str) -> Result<(DType, Vec<usize>)> {
        let info = self
            .file
            .tensor_info(name)
            .ok_or_else(|| crate::HearthError::MissingTensor(name.to_string()))?;
        Ok((info.dtype()?, info.shape()))
    }
}
