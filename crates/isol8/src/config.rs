//! config (in progress)
/// Config errors.
#[derive(Debug, thiserror::Error)]
#[error("config error")]
pub struct ConfigError;
