//! images (in progress)
/// Image errors.
#[derive(Debug, thiserror::Error)]
#[error("image error")]
pub struct ImageError;
