#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and integration tests against a real
# Docker daemon (installed, started and provisioned with images first if needed).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_docker
ensure_tools
build_agent
ISOL8="$(build_cli debug)"
ensure_images "$ISOL8"
ensure_agent_image "$ISOL8"
# The PostgreSQL and MySQL key stores are tested against real servers.
ensure_postgres
ensure_mysql
# The Python client's tests (pytest) run in a virtualenv against the isol8 built above.
PYTHON="$(ensure_client_venv)"
# ...which also holds the Python `mcp` package, the client of one `isol8 mcp` test
# (crates/isol8-cli/tests/mcp.rs; it fails in CI without it).
export ISOL8_MCP_PYTHON="$PYTHON"

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --quiet --workspace --all-targets -- -D warnings

# A short fuzzing run of every cargo-fuzz target (longer runs: scripts/fuzz.sh 600).
say "fuzzing (cargo fuzz, ${ISOL8_FUZZ_SECONDS:-30}s per target)"
"$ROOT/scripts/fuzz.sh" "${ISOL8_FUZZ_SECONDS:-30}"

# Tests that skip at run time (outside CI, when Docker, the registries, PostgreSQL, MySQL or root
# are missing; in CI they fail instead) append "<test><TAB><reason>" here
# (crates/isol8-testkit); the closing line counts them as skipped, not passed.
skips="$(mktemp)"
export ISOL8_TEST_SKIP_LOG="$skips"
print_skips() {
  [ -s "$skips" ] || return 0
  echo "skipped at run time ($(wc -l <"$skips")):"
  sed 's/^/  SKIPPED: /; s/\t/: /' "$skips"
}

# Fault injection that restarts the Docker daemon stops every container on the host, so
# it runs alone, before the main suite (where it is ignored).
say "fault injection: the Docker daemon restarted mid-execution (run alone)"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run -p isol8 --test fault --run-ignored only -E 'test(daemon_restart)' \
    || die "the daemon-restart fault-injection test failed"
else
  cargo test -p isol8 --test fault -- --ignored daemon_restart \
    || die "the daemon-restart fault-injection test failed"
fi
docker_up || die "the Docker daemon is not running after the daemon-restart test"
print_skips
: >"$skips"

# isol8 containers that existed before the tests (e.g. a running server's) are not ours.
before="$(docker ps -aq --filter label=isol8.managed=true | sort)"

say "tests (unit + integration against the Docker daemon)"
# CI=true makes integration tests fail instead of skipping when Docker is missing.
log="$(mktemp)"
set +e  # keep going after failing tests: the leftover check below still runs
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast --test-threads 4 2>&1 | tee "$log"
else
  cargo test --workspace --no-fail-fast -- --test-threads 4 2>&1 | tee "$log"
fi
status=${PIPESTATUS[0]}

# The Python client (clients/python) against a real `isol8 serve` of the binary built
# above, which its fixture starts and stops (CI=true: a missing prerequisite fails).
say "Python client tests (pytest, clients/python)"
pylog="$(mktemp)"
(cd "$ROOT/clients/python" && ISOL8_BIN="$ISOL8" "$PYTHON" -m pytest -v -rs -p no:cacheprovider) \
  2>&1 | tee "$pylog"
pystatus=${PIPESTATUS[0]}
# 5: no test was collected, which is a failure too.
[ "$pystatus" -eq 0 ] || status=1
set -e

after="$(docker ps -aq --filter label=isol8.managed=true | sort)"
left="$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')"
if [ -n "$left" ]; then
  docker ps -a --filter label=isol8.managed=true >&2
  die "isol8 container(s) left on the daemon by the test suite: $(echo $left)"
fi
say "no isol8 container left on the daemon by the test suite"

# The runner's own summary, then the closing line: its counts with the tests that skipped
# at run time moved from "passed" (where the runner counts them: neither libtest nor
# nextest can report a skip at run time) to "skipped".
count() { { grep -oE "[0-9]+ $1" <<<"$2" || true; } | awk '{ n += $1 } END { print n + 0 }'; }
summary="$(grep -E '^ *Summary \[' "$log" | tail -n 1 || true)"
if [ -n "$summary" ]; then
  # nextest: "Summary [ 53.8s] 162 tests run: 160 passed, 1 failed, 1 timed out, 1 skipped"
  passed="$(count passed "$summary")"
  failed=$(( $(count failed "$summary") + $(count 'timed out' "$summary") ))
  ignored="$(count skipped "$summary")"
else
  # cargo test: one "test result: ok. 9 passed; 0 failed; 1 ignored; …" per test binary
  summary="$(grep -E '^test result:' "$log" || true)"
  passed="$(count passed "$summary")"
  failed="$(count failed "$summary")"
  ignored="$(count ignored "$summary")"
  summary="$(tail -n 1 <<<"$summary")"
fi
rm -f "$log"
# pytest: "===== 1 failed, 47 passed, 2 skipped, 1 error in 17.69s ====="
pysummary="$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected)' "$pylog" | grep -E ' in [0-9.]+s' | tail -n 1 || true)"
rm -f "$pylog"
[ -n "$pysummary" ] || { echo "pytest printed no summary (exit status $pystatus)" >&2; status=1; }
passed=$(( passed + $(count passed "$pysummary") ))
failed=$(( failed + $(count failed "$pysummary") + $(count error "$pysummary") ))
ignored=$(( ignored + $(count skipped "$pysummary") ))
if [ "$pystatus" -ne 0 ] && [ "$(count failed "$pysummary")" -eq 0 ] && [ "$(count error "$pysummary")" -eq 0 ]; then
  failed=$(( failed + 1 ))  # pytest failed without a failed test (no test collected, an internal error)
fi
runtime_skipped="$(wc -l <"$skips")"
print_skips
rm -f "$skips"
echo "$summary"
[ -z "$pysummary" ] || echo "pytest: $pysummary"
echo "tests: $((passed - runtime_skipped)) passed, $failed failed, $((ignored + runtime_skipped)) skipped"
exit "$status"
