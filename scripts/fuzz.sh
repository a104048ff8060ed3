#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60) and fails
# on the first crash, leaving the crashing input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags. No
# sanitizer (the code under test is safe Rust) but debug assertions and overflow checks
# on. The corpus grows in fuzz/corpus/<target> (not committed),
# seeded from fuzz/seeds/<target>. A crash becomes a regression test in
# crates/isol8-protocol/tests/fuzz.rs (or next to the code it breaks) and gets fixed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds="${1:-60}"
shift || true
[[ "$seconds" =~ ^[0-9]+$ ]] || die "usage: scripts/fuzz.sh [SECONDS] [TARGET...]"

ensure_cargo_fuzz() {
  command -v cargo-fuzz >/dev/null && return
  say "installing cargo-fuzz (once, into ~/.cargo/bin)"
  cargo install --quiet --locked cargo-fuzz
}
ensure_cargo_fuzz

cd "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
# Its own target directory: instrumented builds must not evict the workspace's. 16
# codegen units: builds take a fraction of the time for slightly slower runs.
flags=(--sanitizer none --debug-assertions --codegen-units 16 --target-dir "$ROOT/fuzz/target")
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

say "building the fuzz targets"
cargo fuzz build "${flags[@]}" >&2

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  dict=()
  [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
  say "fuzzing $t for ${seconds}s"
  log="$(mktemp)"
  # -timeout: an input taking over 10 s is a hang; -rss_limit_mb: an input making a
  # parser allocate more than that is a bug too.
  if ! cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
      "${dict[@]}" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    rm -f "$log"
    die "fuzz target $t failed: the crashing input is in fuzz/artifacts/$t/"
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tr '\n' ' ' >&2
  echo >&2
  rm -f "$log"
done
say "fuzzing: no crash in ${#targets[@]} target(s), ${seconds}s each"
