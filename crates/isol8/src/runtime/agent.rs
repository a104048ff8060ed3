//! The `agent` runtime: the pi coding agent (npm `@mariozechner/pi-coding-agent`) run
//! non-interactively in the sandbox, with the request's `code` as its prompt.
//!
//! Its command line is built here as argv, never as shell text:
//!
//! ```text
//! pi --no-session --append-system-prompt <SANDBOX_SYSTEM_PROMPT> [agentFlags…] -p <prompt>
//! ```
//!
//! `agentFlags` is split like a POSIX shell splits words (quotes and backslashes), but
//! nothing in it is expanded or run: `$(…)`, backticks, `;`, `|` and globs reach pi as
//! literal argument text. A string that cannot be split (an unclosed quote) is refused.
//!
//! The agent must reach its model provider, so its network rules are the reference's:
//! `none` is refused, `filtered` needs at least one whitelist entry, and `host` is left to
//! the operator (the server's `serverPolicy`). See [`check_network`].

use isol8_protocol::{NetworkFilter, NetworkMode};

use crate::{Error, Result};

/// Name of the runtime in requests.
pub const NAME: &str = "agent";

/// Image of the runtime (built by `isol8 setup --runtime agent`).
pub const IMAGE: &str = "isol8:agent";

/// Text appended to pi's own system prompt on every run (`--append-system-prompt`): it
/// tells the model where it runs, so it does not plan on what the sandbox forbids.
pub const SANDBOX_SYSTEM_PROMPT: &str = "This session runs inside an isol8 sandbox: a \
locked-down container with limits on memory, CPU, processes and time. The network is \
limited to the hosts the operator allowed, files outside /sandbox, /tmp and /dev/shm are \
read-only, and nothing you write survives the run except what the caller reads back. Do \
your work under /sandbox, expect downloads from arbitrary hosts to fail, and do not try to \
leave or weaken the sandbox.";

/// Largest prompt accepted, in bytes: Linux refuses a single argument of 128 KiB or more
/// (`MAX_ARG_STRLEN`, counting its terminating NUL).
pub const MAX_PROMPT_BYTES: usize = (128 << 10) - 1;

/// The fixed start of every agent command line, before the request's flags.
pub fn fixed_prefix() -> Vec<String> {
    [
        "pi",
        "--no-session",
        "--append-system-prompt",
        SANDBOX_SYSTEM_PROMPT,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Splits `agentFlags` into argv items as a POSIX shell splits words (single and double
/// quotes, backslash escapes), without expanding or running anything. Refused (naming the
/// field) when the text cannot be split — an unclosed quote, a trailing backslash — or
/// holds a NUL byte.
pub fn split_flags(flags: &str) -> Result<Vec<String>> {
    if flags.contains('\0') {
        return Err(Error::InvalidRequest(
            "agentFlags contains a NUL byte; pass pi's flags as plain text".into(),
        ));
    }
    shlex::split(flags).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "agentFlags `{flags}` cannot be split into arguments (an unclosed quote or a trailing backslash); quote each argument with matching ' or \" quotes"
        ))
    })
}

/// The argv of one agent run: `prefix` (the runtime's fixed start), the split `flags`,
/// then `-p` and the prompt as one argument.
///
/// pi reads an argument after `-p` that starts with `-` (but not `---`) as a flag and one
/// that starts with `@` as a file to attach; such a prompt is passed with one leading
/// space, which keeps it the prompt. A prompt over [`MAX_PROMPT_BYTES`] or with a NUL byte
/// is refused.
pub fn command(prefix: &[String], flags: Option<&str>, prompt: &str) -> Result<Vec<String>> {
    if prompt.trim().is_empty() {
        return Err(Error::InvalidRequest(
            "the agent runtime's `code` is its prompt, and it is empty; say what the agent should do".into(),
        ));
    }
    if prompt.contains('\0') {
        return Err(Error::InvalidRequest(
            "the agent's prompt (`code`) contains a NUL byte".into(),
        ));
    }
    let prompt =
        if prompt.starts_with('@') || (prompt.starts_with('-') && !prompt.starts_with("---")) {
            format!(" {prompt}")
        } else {
            prompt.to_string()
        };
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(Error::InvalidRequest(format!(
            "the agent's prompt (`code`) is {} bytes; the largest one is {MAX_PROMPT_BYTES} bytes (one command-line argument); put long material in `files` and refer to it",
            prompt.len()
        )));
    }
    let mut argv = prefix.to_vec();
    argv.extend(split_flags(flags.unwrap_or_default())?);
    argv.push("-p".into());
    argv.push(prompt);
    Ok(argv)
}

/// The agent's network rules, checked before anything starts: `none` is refused (the
/// agent must reach its model provider), `filtered` needs at least one non-empty
/// whitelist, `host` passes here (whether it is allowed is the operator's call: the
/// server's `serverPolicy.allowHostNetwork`).
pub fn check_network(network: NetworkMode, filter: &NetworkFilter) -> Result<()> {
    match network {
        NetworkMode::None => Err(Error::InvalidRequest(
            "the agent runtime needs network access to reach its model provider's API, but the network is `none`; use the `filtered` network with the provider's host allowed (e.g. --net filtered --allow '^api\\.anthropic\\.com$'), or `host` where the operator allows it".into(),
        )),
        NetworkMode::Filtered if filter.whitelists().next().is_none() => {
            Err(Error::InvalidRequest(
                "the agent runtime on the `filtered` network needs at least one whitelist entry (its model provider's host, e.g. --allow '^api\\.anthropic\\.com$'); with none it could reach every host".into(),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(flags: Option<&str>, prompt: &str) -> Vec<String> {
        command(&fixed_prefix(), flags, prompt).expect("valid")
    }

    #[test]
    fn the_command_line_is_the_fixed_flags_the_request_flags_then_the_prompt() {
        let argv = run(
            Some("--model 'anthropic/claude sonnet' --thinking low"),
            "fix the tests",
        );
        assert_eq!(
            argv,
            [
                "pi",
                "--no-session",
                "--append-system-prompt",
                SANDBOX_SYSTEM_PROMPT,
                "--model",
                "anthropic/claude sonnet",
                "--thinking",
                "low",
                "-p",
                "fix the tests",
            ]
        );
        // No flags: the fixed part and the prompt.
        assert_eq!(run(None, "hi")[4..], ["-p", "hi"]);
        assert_eq!(run(Some("   "), "hi")[4..], ["-p", "hi"]);
    }

    #[test]
    fn hostile_flags_stay_literal_argv_items() {
        // Nothing is expanded or run: each shell construct is text in pi's argv.
        for (flags, items) in [
            ("$(rm -rf /)", vec!["$(rm", "-rf", "/)"]),
            ("--model x; id", vec!["--model", "x;", "id"]),
            ("; id", vec![";", "id"]),
            (
                "`id` | tee /tmp/x && reboot",
                vec!["`id`", "|", "tee", "/tmp/x", "&&", "reboot"],
            ),
            ("--model \"$HOME\" *", vec!["--model", "$HOME", "*"]),
            ("'$(id)'", vec!["$(id)"]),
            ("--x a\\ b", vec!["--x", "a b"]),
            (
                "--model x\n--thinking high",
                vec!["--model", "x", "--thinking", "high"],
            ),
        ] {
            let argv = run(Some(flags), "p");
            assert_eq!(argv[4..argv.len() - 2], items, "{flags}");
            assert_eq!(argv[argv.len() - 2..], ["-p", "p"], "{flags}");
            assert_eq!(argv[..4], fixed_prefix()[..], "{flags}");
        }
    }

    #[test]
    fn flags_that_cannot_be_split_are_refused() {
        for bad in ["--model 'unclosed", "--model \"half", "trailing\\", "a\0b"] {
            let e = command(&fixed_prefix(), Some(bad), "p").expect_err(bad);
            assert!(e.to_string().contains("agentFlags"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_prompt_is_one_argument_pi_never_reads_as_a_flag_or_file() {
        let hostile = "$(id); `reboot` | rm -rf / \"'";
        assert_eq!(run(None, hostile).last().map(String::as_str), Some(hostile));
        // pi would read these as a flag or a file to attach: a leading space keeps them
        // the prompt.
        for p in ["--help", "-v", "@/etc/shadow"] {
            assert_eq!(run(None, p).last().cloned(), Some(format!(" {p}")), "{p}");
        }
        assert_eq!(
            run(None, "--- a heading").last().map(String::as_str),
            Some("--- a heading")
        );
        for bad in ["", "  \n", "a\0b"] {
            assert!(command(&fixed_prefix(), None, bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(MAX_PROMPT_BYTES + 1);
        let e = command(&fixed_prefix(), None, &long).expect_err("too long");
        assert!(e.to_string().contains("131071"), "{e}");
        assert!(command(&fixed_prefix(), None, &long[1..]).is_ok());
    }

    #[test]
    fn network_rules_are_the_references() {
        let none = check_network(NetworkMode::None, &NetworkFilter::default())
            .expect_err("none")
            .to_string();
        assert!(
            none.contains("needs network access") && none.contains("filtered"),
            "{none}"
        );
        let empty = check_network(NetworkMode::Filtered, &NetworkFilter::default())
            .expect_err("empty whitelist")
            .to_string();
        assert!(empty.contains("at least one whitelist entry"), "{empty}");
        // A blacklist alone is no whitelist.
        let black = NetworkFilter {
            blacklist: vec!["^evil$".into()],
            ..Default::default()
        };
        assert!(check_network(NetworkMode::Filtered, &black).is_err());
        let allowed = NetworkFilter {
            whitelist: vec!["^api\\.anthropic\\.com$".into()],
            ..Default::default()
        };
        assert!(check_network(NetworkMode::Filtered, &allowed).is_ok());
        assert!(check_network(NetworkMode::Host, &NetworkFilter::default()).is_ok());
    }
}
