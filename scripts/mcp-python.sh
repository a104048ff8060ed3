#!/usr/bin/env bash
# The official Python MCP SDK (the `mcp` package) in a virtual environment of its own,
# for the test that drives `isol8 mcp` with it (crates/isol8-cli/tests/mcp.rs, through
# ISOL8_MCP_PYTHON). Installs python3 and venv support on Debian when missing; reuses
# the environment when it already has the pinned version. Prints the interpreter's path
# on stdout (everything else goes to stderr).
#
#   export ISOL8_MCP_PYTHON="$(scripts/mcp-python.sh)"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

version="${ISOL8_MCP_PY_VERSION:-2.3.0}"
venv="${ISOL8_MCP_VENV:-$ROOT/target/mcp-venv}"
python="$venv/bin/python"

if ! "$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$version')" 2>/dev/null; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    say "installing python3 and python3-venv (for the Python MCP client test)"
    apt_install python3 python3-venv
  fi
  say "installing the Python mcp package $version into $venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$version" >&2 \
    || die "pip could not install mcp==$version into $venv"
fi
echo "$python"
