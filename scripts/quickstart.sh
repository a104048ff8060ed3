#!/usr/bin/env bash
# Quick start: installs and starts Docker if needed, builds isol8 and its images, and runs
# a hello-world in all five runtimes.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_docker
ensure_tools
build_agent
ISOL8="$(build_cli release)"
cp "$AGENT_BIN" "$(dirname "$ISOL8")/isol8-agent"
ensure_images "$ISOL8"

say "hello world in five runtimes"
"$ISOL8" run -r python -e 'import sys; print(f"hello from python {sys.version.split()[0]}")'
"$ISOL8" run -r node -e 'console.log(`hello from node ${process.version}`)'
"$ISOL8" run -r bun -e 'console.log(`hello from bun ${Bun.version}`)'
"$ISOL8" run -r deno -e 'console.log(`hello from deno ${Deno.version.deno}`)'
"$ISOL8" run -r bash -e 'echo "hello from bash $BASH_VERSION"'
say "done: the CLI is $ISOL8"
