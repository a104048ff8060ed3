//! What a tool answers: an execution's result as text a model reads (exit code, why the
//! program ended, stdout, stderr) plus the same as `structuredContent`, with long output
//! cut in the middle under a marker that says so; and failures as MCP tool errors
//! (`isError: true`) carrying the one line `isol8 run` would print.

use isol8_protocol::{ExecutionResult, ExitReason};
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{json, Value};

/// Default cap on each of stdout and stderr in a tool result, in bytes (the engine's own
/// `maxOutputSize` applies first; this keeps a model's context small).
pub const DEFAULT_TOOL_OUTPUT_BYTES: usize = 16 * 1024;

/// `text` cut to at most about `max` bytes: its head and tail, with a marker line in
/// between saying how many bytes were left out (at char boundaries).
pub fn cap(text: &str, max: usize, stream: &str) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let head_end = floor_boundary(text, max / 2);
    let tail_start = ceil_boundary(text, text.len() - (max - max / 2));
    let omitted = tail_start - head_end;
    (
        format!(
            "{}\n[... isol8 mcp: {omitted} bytes of {stream} omitted here; the first and last part are shown ...]\n{}",
            &text[..head_end],
            &text[tail_start..]
        ),
        true,
    )
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The word for why the program ended.
fn reason_name(reason: ExitReason) -> &'static str {
    match reason {
        ExitReason::Exited => "exited",
        ExitReason::Timeout => "timeout",
        ExitReason::MemoryLimit => "memoryLimit",
        ExitReason::OutputLimit => "outputLimit",
        ExitReason::Signal => "signal",
        ExitReason::SandboxLost => "sandboxLost",
    }
}

/// A finished execution as a tool result: never an error (the program's own failure is
/// its exit code and stderr); `structuredContent` holds `stdout`, `stderr`, `exitCode`,
/// `exitReason` (when the engine reports it), `durationMs`, `truncated` (the engine's
/// `maxOutputSize` cut the output), `outputCapped` (this server cut it for the model),
/// `sessionId` where one applies and `containerId` where known.
pub fn result(res: &ExecutionResult, max: usize, session_id: Option<&str>) -> CallToolResult {
    let (stdout, cut_out) = cap(&res.stdout, max, "stdout");
    let (stderr, cut_err) = cap(&res.stderr, max, "stderr");
    let mut text = format!("exit code: {}", res.exit_code);
    if let Some(reason) = res.exit_reason {
        text.push_str(&format!(" (exit reason: {})", reason_name(reason)));
    }
    if res.truncated {
        text.push_str("\nnote: the output was cut at the sandbox's output limit (maxOutputSize)");
    }
    if let Some(id) = session_id {
        text.push_str(&format!("\nsession: {id}"));
    }
    text.push_str("\n--- stdout ---\n");
    text.push_str(&stdout);
    if !stdout.is_empty() && !stdout.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("--- stderr ---\n");
    text.push_str(&stderr);
    let mut structured = json!({
        "stdout": stdout,
        "stderr": stderr,
        "exitCode": res.exit_code,
        "durationMs": res.duration_ms,
        "truncated": res.truncated,
        "outputCapped": cut_out || cut_err,
    });
    if let Some(reason) = res.exit_reason {
        structured["exitReason"] = json!(reason_name(reason));
    }
    if let Some(id) = session_id {
        structured["sessionId"] = json!(id);
    }
    if let Some(id) = &res.container_id {
        structured["containerId"] = json!(id);
    }
    let mut out = CallToolResult::success(vec![ContentBlock::text(text)]);
    out.structured_content = Some(structured);
    out
}

/// A successful tool result with `text` for the model and `structured` as its
/// `structuredContent`.
pub fn success(text: impl Into<String>, structured: Value) -> CallToolResult {
    let mut out = CallToolResult::success(vec![ContentBlock::text(text.into())]);
    out.structured_content = Some(structured);
    out
}

/// A failed tool call: `isError: true` and the one line `isol8 run` would print
/// (`error: …`).
pub fn failure(message: impl std::fmt::Display) -> CallToolResult {
    let line = message.to_string().replace('\n', " ");
    CallToolResult::error(vec![ContentBlock::text(format!("error: {line}"))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_keeps_head_and_tail_with_a_marker() {
        let text: String = (0..10_000).map(|i| format!("{i}\n")).collect();
        let (capped, cut) = cap(&text, 1000, "stdout");
        assert!(cut);
        assert!(capped.starts_with("0\n1\n"), "{capped}");
        assert!(capped.ends_with("9999\n"), "{capped}");
        assert!(capped.contains("bytes of stdout omitted"), "{capped}");
        assert!(capped.len() < 1200, "{}", capped.len());
        let (short, cut) = cap("hi", 1000, "stdout");
        assert_eq!((short.as_str(), cut), ("hi", false));
        // Multi-byte characters are never split.
        let wide = "é".repeat(1000);
        let (capped, cut) = cap(&wide, 101, "stderr");
        assert!(cut && capped.contains("omitted"));
    }

    #[test]
    fn results_carry_exit_code_reason_and_both_streams() {
        let res = ExecutionResult {
            stdout: "out\n".into(),
            stderr: "err".into(),
            exit_code: 137,
            exit_reason: Some(ExitReason::Timeout),
            ..Default::default()
        };
        let r = result(&res, 100, Some("s1"));
        assert_eq!(r.is_error, Some(false));
        let s = r.structured_content.expect("structured");
        assert_eq!(s["exitCode"], 137);
        assert_eq!(s["exitReason"], "timeout");
        assert_eq!(s["sessionId"], "s1");
        let text = serde_json::to_value(&r.content[0]).expect("content")["text"]
            .as_str()
            .expect("text")
            .to_string();
        assert!(
            text.contains("exit code: 137 (exit reason: timeout)"),
            "{text}"
        );
        assert!(
            text.contains("--- stdout ---\nout\n--- stderr ---\nerr"),
            "{text}"
        );
        let f = failure("bad\nthing");
        assert_eq!(f.is_error, Some(true));
    }
}
