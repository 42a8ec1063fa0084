# shellcheck shell=bash
# What both benchmark commands (scripts/bench.sh and scripts/peers/bench.sh) do before
# measuring: a work dir for datasets, logs and the servers' temp dirs (removed at the end
# whatever happens), a load-average reader for the reports, where the release binaries are,
# and the release build of the binaries and the benchmark example. Source it after
# scripts/lib/install.sh; `bench_setup <work-dir-prefix>` sets WORK, TARGET_DIR and BIN_DIR.

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

bench_setup() {
  export PATH="$HOME/.cargo/bin:$PATH"
  WORK=$(mktemp -d -t "$1-XXXXXX")
  export TMPDIR="$WORK"
  # shellcheck disable=SC2064 # expand WORK now: the trap must remove this very dir
  trap "rm -rf '$WORK'" EXIT
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  # shellcheck disable=SC2034 # read by the scripts that source this file
  BIN_DIR="$TARGET_DIR/release"
}

# The release binaries and the benchmark example, as an operator would build them.
bench_build() {
  cargo build --release --workspace --bins --locked
  cargo build --release -p candlepipe-e2e --example pipeline_bench --locked
}
