#!/usr/bin/env bash
# Fuzzes the message decoder and the line protocol encoder with cargo-fuzz (libFuzzer), then
# minimises each corpus (cargo fuzz cmin) so that fuzz/corpus/<target>/ stays small enough
# to commit. The properties live in services/fuzzcheck; `cargo test` replays the committed
# corpus through them on stable, so run this when the codec or lineproto changes and commit
# what it adds. See fuzz/README.md.
#
#   scripts/fuzz.sh                  every target, 600 s each, one after the other
#   scripts/fuzz.sh decode 3600      one target, one hour
#
# One libFuzzer process at a time (the machine has 2 cores). Logs go to
# fuzz/artifacts/<target>.log and <target>-cmin.log, crashing inputs to
# fuzz/artifacts/<target>/ (all git-ignored). Exits non-zero when a target found a crash.
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, coverage instrumentation).
# The pinned stable toolchain is used with RUSTC_BOOTSTRAP=1 rather than a nightly, so the
# fuzzed code is compiled by the same compiler as everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh
export PATH="$HOME/.cargo/bin:$PATH"

ONLY=${1:-all}
SECONDS_EACH=${2:-600}
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
export RUSTC_BOOTSTRAP=1
# With AddressSanitizer on, zstd-sys compiles zstd with -fsanitize=address, and librdkafka's
# ./configure (built because the consumer, whose line protocol the targets check, links rdkafka) then fails its "link against
# libzstd" check unless its test programs link the sanitizer runtime too.
export LDFLAGS="${LDFLAGS:-} -fsanitize=address"

# The fuzz workspace resolves the same dependency versions as the root one (plus
# libfuzzer-sys): its lock file is the root's, copied afresh each run (git-ignored).
cp Cargo.lock fuzz/Cargo.lock

mapfile -t ALL < <(find fuzz/fuzz_targets -name '*.rs' -printf '%f\n' | sed 's/\.rs$//' | sort)
if [ "$ONLY" = all ]; then
  TARGETS=("${ALL[@]}")
elif printf '%s\n' "${ALL[@]}" | grep -qx "$ONLY"; then
  TARGETS=("$ONLY")
else
  echo "unknown target '$ONLY' (targets: ${ALL[*]})" >&2
  exit 2
fi

# cmin keeps the fewest files that still reach every code edge the corpus reaches
# (-set_cover_merge: greedy set cover instead of "smallest first"; -use_counters=0: edges,
# not hit-count buckets, which would keep thousands of near-duplicates), and renames each to
# the SHA-1 of its content. The hand-written seed-* files are kept under their names.
minimise() {
  local target=$1 corpus=fuzz/corpus/$1 seeds
  seeds=$(mktemp -d)
  cp "$corpus"/seed-* "$seeds"/ 2>/dev/null || true
  cargo fuzz cmin "$target" "$corpus" -- -set_cover_merge=1 -use_counters=0 -timeout=10 \
    >"fuzz/artifacts/$target-cmin.log" 2>&1
  for seed in "$seeds"/*; do
    [ -e "$seed" ] || continue
    rm -f "$corpus/$(sha1sum "$seed" | cut -d' ' -f1)"
    cp "$seed" "$corpus"/
  done
  rm -rf "$seeds"
}

failed=()
for target in "${TARGETS[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" fuzz/artifacts
  before=$(find "$corpus" -type f | wc -l)
  dict=()
  [ -f "fuzz/$target.dict" ] && dict=("-dict=fuzz/$target.dict")
  log "fuzzing $target for ${SECONDS_EACH}s (corpus: $before files; log: fuzz/artifacts/$target.log)"
  if cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 "${dict[@]}" \
    >"fuzz/artifacts/$target.log" 2>&1; then
    # libFuzzer's last status line (runs, coverage, features, corpus, exec/s) and final stats.
    log "$target: $(grep -E '^#[0-9]+' "fuzz/artifacts/$target.log" | tail -1)"
    log "$target: $(grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' \
      "fuzz/artifacts/$target.log" | tr -s ' \n' ' ')"
    minimise "$target"
    after=$(find "$corpus" -type f | wc -l)
    log "$target: corpus $before -> $after files after cmin ($(tail -1 "fuzz/artifacts/$target-cmin.log"))"
  else
    failed+=("$target")
    log "$target FOUND A CRASH: see fuzz/artifacts/$target.log and fuzz/artifacts/$target/"
    grep -E 'panicked at|^Test unit written to|SUMMARY' "fuzz/artifacts/$target.log" >&2 || true
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  log "crashes in: ${failed[*]} (reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>)"
  exit 1
fi
log "no crashes; commit fuzz/corpus/ (cargo test -p candlepipe-fuzzcheck replays it)"
