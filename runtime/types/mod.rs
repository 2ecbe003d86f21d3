//! Types every layer shares (quant, kv, gpu, model, engine): they sit at the
//! bottom so imports run one way, from the engine down to here.

pub mod candidates;
pub mod dtype;
pub mod rope;
pub mod tensor;

pub use candidates::{Candidates, MAX_CANDIDATES};
pub use dtype::DType;
pub use rope::RopeLayout;
pub use tensor::HostTensor;
