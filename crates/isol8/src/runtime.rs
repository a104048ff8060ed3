//! runtime registry (in progress)
/// A runtime.
#[derive(Debug, Clone)]
pub struct Runtime;
/// The registry.
#[derive(Debug, Clone)]
pub struct RuntimeRegistry;
