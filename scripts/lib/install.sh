# shellcheck shell=bash
# What candlepipe needs on a machine, installed only when missing. Sourced by
# scripts/test.sh and scripts/stack.sh so both install exactly the same things.

# Debian packages: the real servers the tests and the native stack run, the compose
# validator, and the C toolchain bits the Rust crates build against.
CANDLEPIPE_DEB_PACKAGES=(influxdb prometheus docker-compose pkg-config libssl-dev cmake protobuf-compiler)
# tansu: the Kafka-compatible broker (memory:// needs dynostore, sqlite:// needs libsql).
CANDLEPIPE_TANSU_VERSION=0.6.0

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_debian_packages() {
  local missing=()
  for p in "${CANDLEPIPE_DEB_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages present (${CANDLEPIPE_DEB_PACKAGES[*]})"
    return
  fi
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

tansu_bin() {
  command -v tansu 2>/dev/null || { [ -x "$HOME/.cargo/bin/tansu" ] && echo "$HOME/.cargo/bin/tansu"; } || true
}

ensure_tansu() {
  local bin
  bin=$(tansu_bin)
  if [ -n "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$CANDLEPIPE_TANSU_VERSION"; then
    log "tansu present ($("$bin" --version 2>/dev/null | head -1))"
    return
  fi
  log "building tansu $CANDLEPIPE_TANSU_VERSION (first time only: about 25-30 minutes on 2 cores)"
  cargo install tansu --version "$CANDLEPIPE_TANSU_VERSION" --locked --features dynostore,libsql
}

ensure_rust_components() {
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}

# Fails early, naming the directory and the sizes, when the disk holding DIR has less than
# MIN_GB free: a build that runs out of space halfway dies with a linker "Bus error" that
# names neither. A fresh clone's build and tests peaked at 2.4 GB of target/ (2026-11-22).
ensure_free_disk() {
  local dir=$1 min_gb=$2 probe avail_kb
  probe=$dir
  while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
  avail_kb=$(df -Pk "$probe" | awk 'NR == 2 { print $4 }')
  if [ "$avail_kb" -lt $((min_gb * 1024 * 1024)) ]; then
    log "only $((avail_kb / 1024 / 1024)) GB free under $probe; the build and tests need about $min_gb GB (free some space, or set CANDLEPIPE_MIN_FREE_GB to override)"
    return 1
  fi
  log "disk: $((avail_kb / 1024 / 1024)) GB free under $probe"
}
