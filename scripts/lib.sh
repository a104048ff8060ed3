#!/usr/bin/env bash
# Shared steps of the quick start and the test command: make sure Docker is installed
# and running, build the CLI and the static in-sandbox agent, and build the runtime
# images (reusing them when their content hash matches; offline when no registry answers).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AGENT_TARGET="x86_64-unknown-linux-gnu"
AGENT_BIN="$ROOT/target/$AGENT_TARGET/agent/isol8-agent"
export ISOL8_AGENT_BIN="$AGENT_BIN"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $* (run as root or install sudo)"; fi
}

apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* with your package manager"
  if [ -z "${ISOL8_APT_UPDATED:-}" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    export ISOL8_APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

docker_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ensure_docker() {
  if docker_up; then return; fi
  if ! command -v dockerd >/dev/null; then
    say "installing Docker (Debian/Ubuntu package docker.io)"
    apt_install docker.io iptables ca-certificates
  fi
  command -v docker >/dev/null || die "the docker client is missing after installing docker.io"
  say "starting the Docker daemon"
  if under_systemd && as_root systemctl start docker 2>/dev/null; then
    :
  else
    start_dockerd
  fi
  wait_for_docker "is running" "did not start"
}

under_systemd() { [ "$(ps -o comm= -p 1 2>/dev/null)" = "systemd" ]; }

start_dockerd() { as_root bash -c 'setsid dockerd >>/var/log/isol8-dockerd.log 2>&1 < /dev/null &'; }

# wait_for_docker OK FAILED: waits up to 60 s for the daemon to answer, then says
# "Docker <version> OK", or dies with "the Docker daemon FAILED" and the log's tail.
wait_for_docker() {
  for _ in $(seq 1 120); do
    docker_up && { say "Docker $(docker version --format '{{.Server.Version}}') $1"; return; }
    sleep 0.5
  done
  tail -n 20 /var/log/isol8-dockerd.log >&2 2>/dev/null || true
  die "the Docker daemon $2 (see /var/log/isol8-dockerd.log)"
}

# restart_docker: restarts the daemon the way ensure_docker started it — `systemctl
# restart docker` under systemd, otherwise TERM to dockerd (it stops its containers and
# exits; KILL after 60 s), then `setsid dockerd` again — and waits until it answers.
# Every container on the host is stopped by this: only the fault-injection test uses it.
restart_docker() {
  if under_systemd && systemctl is-active --quiet docker 2>/dev/null; then
    say "restarting the Docker daemon (systemctl restart docker)"
    as_root systemctl restart docker
  else
    local pid
    pid="$(pidof -s dockerd || true)"
    [ -n "$pid" ] || die "no dockerd process to restart"
    say "restarting the Docker daemon (stopping dockerd, pid $pid)"
    as_root kill -TERM $pid
    for _ in $(seq 1 120); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
    if [ -d "/proc/$pid" ]; then
      say "dockerd did not stop within 60 s: killing it"
      as_root kill -KILL $pid || true
      for _ in $(seq 1 40); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
    fi
    start_dockerd
  fi
  wait_for_docker "is running again" "did not come back"
}

ensure_tools() {
  command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
  # debootstrap is only needed for offline image builds.
  if ! command -v debootstrap >/dev/null && command -v apt-get >/dev/null; then
    say "installing debootstrap (offline image bootstrap)"
    apt_install debootstrap
  fi
}

build_agent() {
  say "building the static sandbox agent"
  (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --profile agent -p isol8-agent --target "$AGENT_TARGET")
  [ -x "$AGENT_BIN" ] || die "agent build produced no binary at $AGENT_BIN"
}

# build_cli PROFILE -> prints the path of the isol8 binary
build_cli() {
  local profile="$1"
  say "building the isol8 CLI ($profile)"
  if [ "$profile" = release ]; then
    (cd "$ROOT" && cargo build --quiet --release -p isol8-cli)
    echo "$ROOT/target/release/isol8"
  else
    (cd "$ROOT" && cargo build --quiet -p isol8-cli)
    echo "$ROOT/target/debug/isol8"
  fi
}

# ensure_images ISOL8_BIN: builds missing or outdated images; falls back to the offline
# bootstrap when no container registry is reachable.
ensure_images() {
  local isol8="$1" log
  log="$(mktemp)"
  say "building runtime images (skipped when up to date)"
  if "$isol8" setup 2> >(tee "$log" >&2); then rm -f "$log"; return; fi
  if grep -q -- '--offline' "$log"; then
    rm -f "$log"
    say "no container registry reachable: bootstrapping images from the Debian mirror"
    "$isol8" setup --offline
  else
    rm -f "$log"
    die "isol8 setup failed"
  fi
}

# ensure_agent_image ISOL8_BIN: builds the agent runtime's image (isol8:agent, pi pinned by
# images/agent/package-lock.json) when missing or outdated; the agent runtime's tests use
# it. Its base is the one ensure_images made, so no registry is needed.
ensure_agent_image() {
  local isol8="$1"
  say "building the agent runtime's image (skipped when up to date)"
  "$isol8" setup --runtime agent || die "isol8 setup --runtime agent failed"
}

# ensure_postgres: a running PostgreSQL server (Debian's package, installed if missing)
# with a role and a database for the tests; exports ISOL8_TEST_POSTGRES_URL. Reuses a
# URL already in the environment.
ensure_postgres() {
  if [ -n "${ISOL8_TEST_POSTGRES_URL:-}" ]; then return; fi
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /usr/lib/postgresql/*/bin/postgres 2>/dev/null)" ]; then
    say "installing PostgreSQL (Debian package postgresql)"
    apt_install postgresql
  fi
  local version port
  version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
  [ -n "$version" ] || die "no PostgreSQL server under /usr/lib/postgresql after installing it"
  # The package creates the cluster 'main' unless told not to; its services are never
  # started for us (no systemd, policy-rc.d), so start it by hand.
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
    as_root pg_createcluster "$version" main >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -qx online; then
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster "$version" main start
  fi
  port="$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')"
  local psql=(as_root runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtAX)
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='isol8_test'")" != 1 ]; then
    "${psql[@]}" -c "CREATE ROLE isol8_test LOGIN PASSWORD 'isol8_test'"
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname='isol8_test'")" != 1 ]; then
    "${psql[@]}" -c "CREATE DATABASE isol8_test OWNER isol8_test"
  fi
  export ISOL8_TEST_POSTGRES_URL="postgres://isol8_test:isol8_test@127.0.0.1:$port/isol8_test"
  say "PostgreSQL $version on port $port (database isol8_test)"
}

# ensure_mysql: a running MariaDB server (Debian's package mariadb-server, installed if
# missing) with a user and a database for the MySQL key-store tests; exports
# ISOL8_TEST_MYSQL_URL. Reuses a URL already in the environment.
ensure_mysql() {
  if [ -n "${ISOL8_TEST_MYSQL_URL:-}" ]; then return; fi
  if [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-admin >/dev/null; then
    say "installing MariaDB (Debian package mariadb-server)"
    apt_install mariadb-server
  fi
  [ -x /usr/sbin/mariadbd ] || die "no MariaDB server at /usr/sbin/mariadbd after installing mariadb-server"
  local sock=/run/mysqld/mysqld.sock log=/var/log/isol8-mariadb.log
  local admin=(as_root mariadb-admin --socket="$sock" --connect-timeout=2)
  if ! "${admin[@]}" ping >/dev/null 2>&1; then
    # The package's service is never started for us (no systemd, policy-rc.d): start the
    # server by hand, on Debian's configuration (127.0.0.1, port 3306).
    as_root install -d -o mysql -g mysql -m 0755 /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
      say "initialising the MariaDB data directory"
      as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    say "starting MariaDB"
    as_root bash -c "setsid /usr/sbin/mariadbd --user=mysql >>$log 2>&1 < /dev/null &"
    local up=""
    for _ in $(seq 1 120); do
      if "${admin[@]}" ping >/dev/null 2>&1; then up=1; break; fi
      sleep 0.5
    done
    if [ -z "$up" ]; then
      tail -n 20 "$log" >&2 2>/dev/null || true
      die "MariaDB did not start within 60 s (see $log)"
    fi
  fi
  local sql=(as_root mariadb --socket="$sock" -N -B)
  local port
  port="$("${sql[@]}" -e 'SELECT @@port')"
  # The tests also create (and drop) databases of their own named isol8_test_*.
  "${sql[@]}" -e "
    CREATE DATABASE IF NOT EXISTS isol8_test;
    CREATE USER IF NOT EXISTS 'isol8_test'@'127.0.0.1' IDENTIFIED BY 'isol8_test';
    CREATE USER IF NOT EXISTS 'isol8_test'@'localhost' IDENTIFIED BY 'isol8_test';
    GRANT ALL PRIVILEGES ON isol8_test.* TO 'isol8_test'@'127.0.0.1';
    GRANT ALL PRIVILEGES ON isol8_test.* TO 'isol8_test'@'localhost';
    GRANT ALL PRIVILEGES ON \`isol8\\_test\\_%\`.* TO 'isol8_test'@'127.0.0.1';
    GRANT ALL PRIVILEGES ON \`isol8\\_test\\_%\`.* TO 'isol8_test'@'localhost';"
  export ISOL8_TEST_MYSQL_URL="mysql://isol8_test:isol8_test@127.0.0.1:$port/isol8_test"
  say "MariaDB $("${sql[@]}" -e 'SELECT VERSION()') on port $port (database isol8_test)"
}

# ensure_client_venv -> prints the python of a virtualenv (target/venv-clients, made with
# the system's python3; Debian's python3-venv installed if missing) holding the Python
# client (`pip install ./clients/python`, as a user would) and its test dependencies, and
# the official MCP SDK (`mcp`, pinned) that one `isol8 mcp` test drives it with.
# pip installs the client anew on every call, so the tests run against this checkout.
ensure_client_venv() {
  local venv="$ROOT/target/venv-clients"
  if ! command -v python3 >/dev/null; then
    say "installing Python 3 (Debian package python3)"
    apt_install python3
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    say "installing the venv module (Debian package python3-venv)"
    apt_install python3-venv
  fi
  if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || die "python3 -m venv $venv failed"
  fi
  say "installing the Python client and its test dependencies into $venv (pip)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$ROOT/clients/python[test]" "mcp==${ISOL8_MCP_PY_VERSION:-2.3.0}" >&2 \
    || die "pip install ./clients/python[test] mcp failed"
  echo "$venv/bin/python"
}
