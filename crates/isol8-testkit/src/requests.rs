//! Requests and runs.

use isol8::{DockerEngine, Engine, ExecutionRequest, ExecutionResult};

/// A request running `code` in `runtime`, everything else default.
pub fn code(runtime: &str, code: &str) -> ExecutionRequest {
    ExecutionRequest {
        runtime: runtime.into(),
        code: Some(code.into()),
        ..Default::default()
    }
}

/// Runs a request, panicking with the request and the error when the engine fails.
pub async fn run(engine: &DockerEngine, req: ExecutionRequest) -> ExecutionResult {
    match engine.execute(req.clone()).await {
        Ok(r) => r,
        Err(e) => panic!("execution of {req:?} failed: {e}"),
    }
}
