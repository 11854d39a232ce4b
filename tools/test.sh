#!/usr/bin/env bash
# The project's whole test run: bootstrap, format, lints, every test, a bounded fuzz pass.
# This is the README's test command and what CI runs (via .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/bootstrap.sh
# The namespace/DPDK lab tests skip themselves without root on a developer box; here they must
# run (CI is root), so a missing privilege fails the run instead of passing silently.
if [[ $(id -u) -eq 0 ]]; then
  export POPMESH_LAB_REQUIRED=1
fi
echo "== fmt";    cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests";  cargo nextest run --workspace --locked --no-fail-fast
echo "== doctests"; cargo test --workspace --doc --locked
echo "== benches (one quick iteration each, to prove they run)"
cargo bench --workspace --locked -- --test
echo "== fuzz (${FUZZ_SECONDS:=20}s per target)"
FUZZ_SECONDS="$FUZZ_SECONDS" bash tools/fuzz.sh
echo "== all passed"
