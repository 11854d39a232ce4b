#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace for a fixed time each; exits non-zero if any
# target crashes (or fails to build).
#
# Usage: tools/fuzz.sh [FUZZ_DIR...]
#   FUZZ_DIR     a cargo-fuzz directory (holding Cargo.toml and fuzz_targets/); default: every
#                */fuzz below the repository root: dataplane/wire/fuzz, dataplane/config/fuzz,
#                perf/fuzz, hw/fuzz (parse_cpulist, parse_cmdline) and ctrl/api/fuzz (spiffe_id,
#                decode_update) and dataplane/signal/fuzz (traceparent, mesh_snapshot, tls_pem,
#                tls_accept) today.
#   FUZZ_SECONDS seconds per target (default 30).
#   FUZZ_SANITIZER  cargo-fuzz sanitizer (default "none"). On the stable toolchain only "none"
#                works: the default "address" passes -Zsanitizer=address, which stable rustc
#                rejects (RUSTC_BOOTSTRAP=1 does not get through cargo's target probe either).
#                With a nightly toolchain, `FUZZ_SANITIZER=address cargo +nightly ...` is the
#                stronger choice.
#
# Verified on Rust 1.95 stable + cargo-fuzz 0.13.2 with:
#   cd dataplane/wire && cargo fuzz run parse_frame -s none -- -max_total_time=20
# Corpora land in <fuzz dir>/corpus/<target>, crashes in <fuzz dir>/artifacts/<target>.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

dirs=()
if [[ $# -gt 0 ]]; then
    for arg in "$@"; do
        dir="$(cd "$arg" && pwd)"
        if [[ ! -f "$dir/Cargo.toml" || ! -d "$dir/fuzz_targets" ]]; then
            echo "fuzz.sh: $arg is not a cargo-fuzz directory (needs Cargo.toml and fuzz_targets/)" >&2
            exit 2
        fi
        dirs+=("$dir")
    done
else
    while IFS= read -r dir; do
        if [[ -f "$dir/Cargo.toml" && -d "$dir/fuzz_targets" ]]; then
            dirs+=("$dir")
        fi
    done < <(find "$root" -type d -name fuzz \
        -not -path '*/target/*' -not -path '*/.git/*' -not -path '*/corpus/*' | sort)
fi

if [[ ${#dirs[@]} -eq 0 ]]; then
    echo "fuzz.sh: no fuzz directories found under $root" >&2
    exit 2
fi

failed=()
ran=0
for dir in "${dirs[@]}"; do
    crate="$(dirname "$dir")"
    mapfile -t targets < <(cd "$crate" && cargo fuzz list --fuzz-dir "$dir")
    if [[ ${#targets[@]} -eq 0 ]]; then
        echo "fuzz.sh: ${dir#"$root"/}: no targets" >&2
        continue
    fi
    for target in "${targets[@]}"; do
        echo "=== fuzz ${dir#"$root"/} :: $target (${seconds}s, sanitizer $sanitizer)" >&2
        if (cd "$crate" && cargo fuzz run --fuzz-dir "$dir" -s "$sanitizer" "$target" -- \
            -max_total_time="$seconds" -print_final_stats=1); then
            ran=$((ran + 1))
        else
            failed+=("${dir#"$root"/}::$target")
        fi
    done
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: FAILED (crash or build error): ${failed[*]}" >&2
    echo "fuzz.sh: reproduce with: cargo fuzz run -s $sanitizer <target> <fuzz dir>/artifacts/<target>/<file>" >&2
    exit 1
fi
echo "fuzz.sh: $ran target(s) ran ${seconds}s each without crashes" >&2
