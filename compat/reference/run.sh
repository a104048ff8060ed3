#!/usr/bin/env bash
# Runs the reference's own tests against our isol8, as issue 12 asks for proof of drop-in
# compatibility: its CLI production tests (apps/cli/tests/production, which call `isol8` on
# PATH) and its HTTP-level server tests (apps/server/tests/server*.test.ts, with
# `createServer` replaced by server-shim.ts, which starts our `isol8 serve`).
#
# Usage: compat/reference/run.sh REF_DIR [cli|server|all] [bun test args...]
#   REF_DIR  a checkout of Illusion47586/isol8 at v0.20 (commit 5c3af95); it is copied to a
#            scratch directory first and never modified.
#   ISOL8_BIN  the isol8 binary to test (default: target/debug/isol8, built if missing).
#   ISOL8_KEEP_SCRATCH=1  keeps the scratch copy for inspection.
#   ISOL8_REFERENCE_CA_BUNDLE  CA bundle sandboxes need behind a TLS-intercepting proxy
#            (default: $SSL_CERT_FILE), written to a scratch HOME's ~/.isol8/config.json.
#   Extra arguments go to `bun test` (e.g. --test-name-pattern 'Hello World').
#
# It runs `isol8 cleanup`-style tests: run it when nothing else uses the Docker daemon.
#
# Needs Docker with our runtime images (`isol8 setup`), bun (installed from npm if
# missing) and the npm registry. Not part of scripts/test.sh: CI machines cannot fetch
# the reference. The project's own compatibility tests (crates/*/tests/compat_*.rs) are.
# What fails and why is listed in docs/COMPATIBILITY.md.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ref="${1:?usage: $0 REF_DIR [cli|server|all] [bun test args...]}"
what="${2:-all}"
shift $(($# < 2 ? $# : 2))

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

bin="${ISOL8_BIN:-$root/target/debug/isol8}"
if [ ! -x "$bin" ]; then
  say "building the isol8 CLI"
  cargo build -q -p isol8-cli --manifest-path "$root/Cargo.toml"
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

if ! command -v bun >/dev/null; then
  say "installing bun from npm"
  npm install -g --silent bun@1.3
fi

work="$(mktemp -d /tmp/isol8-reference-XXXXXX)"
[ -n "${ISOL8_KEEP_SCRATCH:-}" ] || trap 'rm -rf "$work"' EXIT
say "copying the reference to $work"
(cd "$ref" && tar --exclude=./apps/docs -cf - .) | tar -xf - -C "$work"
cd "$work"
if [ ! -d node_modules/hono ]; then
  say "installing the reference's dependencies"
  # The docs app (excluded above) pulls packages the registry no longer serves.
  bun install --ignore-scripts >/dev/null 2>&1 || bun install --ignore-scripts
fi
[ -f packages/core/dist/index.js ] || (cd packages/core && bun run build >/dev/null)

# The server tests: our server behind the `createServer` they import.
cp "$here/server-shim.ts" apps/server/src/index.ts
cp "$here/serve-preload.ts" apps/server/tests/isol8-serve-preload.ts
printf '[test]\npreload = ["./tests/isol8-serve-preload.ts"]\n' > apps/server/bunfig.toml

# The CLI production tests build images with the published reference CLI (`bunx
# @isol8/cli setup`) first; here the CLI under test builds them.
cat > apps/cli/tests/production/setup.ts <<'TS'
import { beforeAll } from "bun:test";
import { execSync } from "node:child_process";
export function getTestVersion(): string {
  return "isol8 (Rust) under test";
}
beforeAll(() => {
  execSync("isol8 setup", { stdio: "inherit", timeout: 600_000 });
}, 600_000);
TS

# The static agent the images need (`isol8 setup --force` rebuilds them with it).
agent="$root/target/x86_64-unknown-linux-gnu/agent/isol8-agent"
[ -n "${ISOL8_AGENT_BIN:-}" ] || [ ! -x "$agent" ] || export ISOL8_AGENT_BIN="$agent"
# Sandboxes that install packages reach the registries through this machine's
# TLS-intercepting proxy, if it has one: its CA bundle goes to our config in a scratch HOME.
ca="${ISOL8_REFERENCE_CA_BUNDLE:-${SSL_CERT_FILE:-}}"
if [ -n "$ca" ]; then
  mkdir -p "$work/home/.isol8"
  printf '{"caBundle": "%s"}\n' "$ca" > "$work/home/.isol8/config.json"
  export HOME="$work/home"
fi
export PATH="$(dirname "$bin"):$PATH"
export ISOL8_BIN="$bin"
status=0
if [ "$what" = cli ] || [ "$what" = all ]; then
  say "reference CLI production tests against $bin"
  (cd apps/cli && bun test --timeout 120000 tests/production/ "$@") || status=1
fi
if [ "$what" = server ] || [ "$what" = all ]; then
  say "reference server tests (HTTP and WebSocket) against isol8 serve"
  (cd apps/server && bun test --timeout 120000 tests/server.test.ts tests/server-auth.test.ts \
    tests/server-sessions.test.ts tests/server-pruning.test.ts tests/server-websocket.test.ts "$@") ||
    status=1
fi
[ -z "${ISOL8_KEEP_SCRATCH:-}" ] || say "scratch copy left in $work"
exit "$status"
