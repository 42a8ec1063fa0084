#!/usr/bin/env bash
# The candlepipe stack from native binaries, for machines without Docker (and for this
# development environment): tansu (a Kafka-compatible broker), InfluxDB 1.x, Prometheus, the
# producer and the consumer, plus Grafana when a `grafana`/`grafana-server` binary is on the
# PATH. Everything listens on 127.0.0.1 only.
#
#   scripts/stack.sh up             install what is missing, build, start, wait, print URLs
#   scripts/stack.sh status         what runs (exit 0 when every started service runs, 3 if not)
#   scripts/stack.sh logs [-f] [service...]
#   scripts/stack.sh down [-v]      stop what `up` started (-v also deletes the stored data)
#
# State lives in STACK_DIR (default .stack/ in the repo, git-ignored): one pid file and one
# log per service, generated configs, and the data (tansu.db, InfluxDB, Prometheus TSDB) that
# survives `down`/`up`. `down` stops only the processes named by those pid files, and only if
# the pid still runs the program it started (a reused pid is left alone).
#
# Settings (environment variables):
#   KAFKA_PORT=9092 INFLUXDB_PORT=8086 INFLUXDB_RPC_PORT=8088 PROMETHEUS_PORT=9090
#   GRAFANA_PORT=3000 PRODUCER_PORT=9101 CONSUMER_PORT=9102
#                          loopback ports; `up` refuses to start when one is taken.
#   STACK_DIR              state folder (default <repo>/.stack).
#   STACK_BIN_DIR          folder holding already built `producer` and `consumer`; unset:
#                          `cargo build --release` builds them.
#   STACK_TIMEOUT=120      seconds a service may take to answer after it started.
#   STACK_STOP_TIMEOUT=45  seconds `down` waits for a graceful exit before SIGKILL.
#   Anything the binaries read passes through: REPLAY_SPEED (default here: max, as in
#   docker compose), REPLAY_BACKFILL, PRODUCER_MODE, SYMBOLS, DATASET_DIR, RUST_LOG, ...
#   Grafana: GRAFANA_HOME (its homepath), GRAFANA_ADMIN_PASSWORD.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/install.sh
source "$REPO/scripts/lib/install.sh"

STACK_DIR=${STACK_DIR:-$REPO/.stack}
KAFKA_PORT=${KAFKA_PORT:-9092}
INFLUXDB_PORT=${INFLUXDB_PORT:-8086}
INFLUXDB_RPC_PORT=${INFLUXDB_RPC_PORT:-8088}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
GRAFANA_PORT=${GRAFANA_PORT:-3000}
PRODUCER_PORT=${PRODUCER_PORT:-9101}
CONSUMER_PORT=${CONSUMER_PORT:-9102}
STACK_TIMEOUT=${STACK_TIMEOUT:-120}
STACK_STOP_TIMEOUT=${STACK_STOP_TIMEOUT:-45}

# Start order; `down` stops in reverse.
SERVICES=(tansu influxd prometheus producer consumer grafana)

die() {
  printf 'stack.sh: %s\n' "$*" >&2
  exit 1
}

pid_file() { echo "$STACK_DIR/$1.pid"; }
log_file() { echo "$STACK_DIR/$1.log"; }

# The loopback port a service listens on, and the variable that moves it.
port_of() {
  case $1 in
    tansu) echo "$KAFKA_PORT" ;;
    influxd) echo "$INFLUXDB_PORT" ;;
    prometheus) echo "$PROMETHEUS_PORT" ;;
    producer) echo "$PRODUCER_PORT" ;;
    consumer) echo "$CONSUMER_PORT" ;;
    grafana) echo "$GRAFANA_PORT" ;;
  esac
}
port_var_of() {
  case $1 in
    tansu) echo KAFKA_PORT ;;
    influxd) echo INFLUXDB_PORT ;;
    prometheus) echo PROMETHEUS_PORT ;;
    producer) echo PRODUCER_PORT ;;
    consumer) echo CONSUMER_PORT ;;
    grafana) echo GRAFANA_PORT ;;
  esac
}

# --- processes ------------------------------------------------------------------------------

# True while `pid` runs (a zombie waiting for its parent to reap it counts as gone).
pid_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [[ $state != Z* ]]
}

# The pid a service's pid file records ("<pid> <program name>"), if any.
recorded_pid() {
  local file pid name
  file=$(pid_file "$1")
  [ -f "$file" ] || return 0
  read -r pid name <"$file" || return 0
  [[ $pid =~ ^[0-9]+$ ]] && echo "$pid"
  return 0
}

# The recorded pid when it still runs the program it started, else nothing. Processes this
# run started are trusted as they are (TRUST_STARTED=1): right after `launch` the pid may
# still be in the `setsid`/`env` exec chain.
running_pid() {
  local pid name comm
  pid=$(recorded_pid "$1")
  [ -n "$pid" ] || return 0
  pid_alive "$pid" || return 0
  if [ "${TRUST_STARTED:-0}" = 1 ]; then
    echo "$pid"
    return 0
  fi
  read -r _ name <"$(pid_file "$1")"
  comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
  # comm is the program name cut to 15 characters (`grafana-server` may exec `grafana`, so
  # a prefix is enough); without ps, trust the pid file.
  if [ -n "$comm" ] && [ -n "$name" ] && [[ ${comm} != "${name:0:15}"* ]]; then
    return 0
  fi
  echo "$pid"
}

# Starts `cmd...` as service `svc` (program name `name`) in folder `dir`, in its own session
# (Ctrl-C in this terminal or closing it does not reach it), output appended to the
# service's log, and records its pid. Every step execs, so `$!` is the program's own pid.
STARTED=()
launch() {
  local svc=$1 name=$2 dir=$3
  shift 3
  local log detach=()
  log=$(log_file "$svc")
  mkdir -p "$dir"
  printf '\n=== %s: starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$log"
  if command -v setsid >/dev/null 2>&1; then detach=(setsid); else detach=(nohup); fi
  (cd "$dir" && exec "${detach[@]}" "$@") >>"$log" 2>&1 </dev/null &
  echo "$! $name" >"$(pid_file "$svc")"
  STARTED+=("$svc")
}

# --- waiting ---------------------------------------------------------------------------------

http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" 2>/dev/null || true
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

log_tail() {
  local log
  log=$(log_file "$1")
  [ -f "$log" ] && tail -n 25 "$log" | sed 's/^/    /' >&2
}

# Waits until `check` succeeds, failing early (with the log) when the service dies.
wait_for() {
  local svc=$1 what=$2
  shift 2
  local deadline=$((SECONDS + STACK_TIMEOUT))
  until "$@"; do
    if ! pid_alive "$(recorded_pid "$svc")"; then
      printf 'stack.sh: %s exited before %s; the end of %s:\n' "$svc" "$what" "$(log_file "$svc")" >&2
      log_tail "$svc"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf 'stack.sh: %s: no %s after %ss; the end of %s:\n' "$svc" "$what" "$STACK_TIMEOUT" "$(log_file "$svc")" >&2
      log_tail "$svc"
      return 1
    fi
    sleep 0.5
  done
}

answers_http() { [ "$(http_status "$1")" = "$2" ]; }

# --- generated configs -----------------------------------------------------------------------

write_influxd_config() {
  local dir=$STACK_DIR/influxdb
  mkdir -p "$dir"
  cat >"$dir/influxdb.conf" <<EOF
# Generated by scripts/stack.sh; rewritten on every start.
reporting-disabled = true
bind-address = "127.0.0.1:$INFLUXDB_RPC_PORT"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$INFLUXDB_PORT"
  log-enabled = false
  max-body-size = 0
[logging]
  level = "info"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
EOF
}

# prometheus/prometheus.yml names compose services (producer:9101, DNS discovery of every
# consumer replica). The copy here keeps everything (global, rule_files, job names, any other
# job setting) and replaces each job's target discovery by one static loopback target.
# Assumes each scrape job starts with `- job_name:` (the repo's file does).
write_prometheus_config() {
  local dir=$STACK_DIR/prometheus src=$REPO/prometheus
  mkdir -p "$dir"
  local f
  for f in "$src"/*.yml; do
    [ "$(basename "$f")" = prometheus.yml ] || cp "$f" "$dir/"
  done
  awk -v ports="prometheus=$PROMETHEUS_PORT producer=$PRODUCER_PORT consumer=$CONSUMER_PORT" '
    function indent(s) { match(s, /^ */); return RLENGTH }
    BEGIN {
      n = split(ports, kv, " ")
      for (i = 1; i <= n; i++) { split(kv[i], p, "="); port[p[1]] = p[2] }
      print "# Generated by scripts/stack.sh from prometheus/prometheus.yml: targets on loopback."
    }
    skipping && ($0 ~ /^[ \t]*$/ || indent($0) > skip_indent) { next }
    { skipping = 0 }
    /^scrape_configs:/ { in_scrape = 1; print; next }
    /^[^ #]/ { in_scrape = 0 }
    in_scrape && /^ *- *job_name:/ {
      print
      job = $0
      sub(/^ *- *job_name: */, "", job); gsub(/["'\'' ]/, "", job)
      if (!(job in port)) { print "unknown scrape job " job > "/dev/stderr"; bad = 1; exit 3 }
      pad = sprintf("%" (indent($0) + 2) "s", "")
      printf "%sstatic_configs:\n%s  - targets: [\"127.0.0.1:%s\"]\n", pad, pad, port[job]
      jobs++
      next
    }
    in_scrape && /^ *[a-z_]+_configs:/ && $0 ~ /(static|_sd)_configs:/ {
      skipping = 1; skip_indent = indent($0); next
    }
    { print }
    END { if (!bad && jobs == 0) { print "no scrape job found" > "/dev/stderr"; exit 3 } }
  ' "$src/prometheus.yml" >"$dir/prometheus.yml" ||
    die "cannot derive a loopback config from prometheus/prometheus.yml (see above)"
  if command -v promtool >/dev/null 2>&1; then
    promtool check config "$dir/prometheus.yml" >"$dir/promtool.log" 2>&1 ||
      { cat "$dir/promtool.log" >&2; die "the generated $dir/prometheus.yml is invalid"; }
  fi
}

# The repo's provisioning names the compose services; this copy points at the loopback ports
# and at the repo's dashboards folder.
write_grafana_config() {
  local dir=$STACK_DIR/grafana
  rm -rf "$dir/provisioning"
  mkdir -p "$dir/data" "$dir/logs" "$dir/plugins"
  cp -R "$REPO/grafana/provisioning" "$dir/provisioning"
  local f
  while IFS= read -r -d '' f; do
    sed -i.orig \
      -e "s#http://influxdb:8086#http://127.0.0.1:$INFLUXDB_PORT#g" \
      -e "s#http://prometheus:9090#http://127.0.0.1:$PROMETHEUS_PORT#g" \
      -e "s#/var/lib/grafana/dashboards#$REPO/grafana/dashboards#g" "$f"
    rm -f "$f.orig"
  done < <(find "$dir/provisioning" -type f \( -name '*.yml' -o -name '*.yaml' \) -print0)
  cat >"$dir/grafana.ini" <<EOF
; Generated by scripts/stack.sh; rewritten on every start.
[paths]
data = $dir/data
logs = $dir/logs
plugins = $dir/plugins
provisioning = $dir/provisioning
[server]
http_addr = 127.0.0.1
http_port = $GRAFANA_PORT
[security]
admin_user = admin
admin_password = ${GRAFANA_ADMIN_PASSWORD:-candlepipe-laptop-only}
[auth.anonymous]
enabled = true
org_role = Viewer
[users]
allow_sign_up = false
[analytics]
reporting_enabled = false
check_for_updates = false
[dashboards]
default_home_dashboard_path = $REPO/grafana/dashboards/crypto-market.json
EOF
}

# --- up ---------------------------------------------------------------------------------------

grafana_bin() {
  command -v grafana 2>/dev/null || command -v grafana-server 2>/dev/null || true
}

grafana_home() {
  if [ -n "${GRAFANA_HOME:-}" ]; then
    echo "$GRAFANA_HOME"
  elif [ -d /usr/share/grafana/conf ]; then
    echo /usr/share/grafana
  else
    (cd "$(dirname "$(readlink -f "$1")")/.." && pwd)
  fi
}

wanted_services() {
  local svc
  for svc in "${SERVICES[@]}"; do
    if [ "$svc" != grafana ] || [ -n "$(grafana_bin)" ]; then echo "$svc"; fi
  done
}

# Every port the given services (those not running yet) need must be free. Checked for all
# of them before anything is installed or built, and again for each right before it starts
# (the build can take minutes, and something else may have taken a port meanwhile).
check_ports() {
  local svc port var taken=() example=
  for svc in "$@"; do
    [ -z "$(running_pid "${svc%-rpc}")" ] || continue
    case $svc in
      influxd-rpc) port=$INFLUXDB_RPC_PORT var=INFLUXDB_RPC_PORT ;;
      *) port=$(port_of "$svc") var=$(port_var_of "$svc") ;;
    esac
    if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
      die "$var=$port is not a TCP port number"
    fi
    if port_in_use "$port"; then
      taken+=("127.0.0.1:$port, wanted by ${svc/-rpc/ (RPC)} (set $var to move it)")
      [ -n "$example" ] || example="$var=$((port + 1000))"
    fi
  done
  if [ ${#taken[@]} -gt 0 ]; then
    printf 'stack.sh: refusing to start: these ports are taken:\n' >&2
    printf '  - %s\n' "${taken[@]}" >&2
    printf 'Stop what holds them (ss -ltnp names it; the Debian influxdb and prometheus\n' >&2
    printf 'packages start system services on 8086/8088 and 9090), or move the stack, e.g.\n' >&2
    printf '  %s scripts/stack.sh up\n' "$example" >&2
    exit 1
  fi
}

binaries() {
  if [ -n "${STACK_BIN_DIR:-}" ]; then
    BIN_DIR=$STACK_BIN_DIR
  else
    log "cargo build --release (producer, consumer)"
    (cd "$REPO" && cargo build --release --locked -p producer -p consumer --bins)
    BIN_DIR=${CARGO_TARGET_DIR:-$REPO/target}/release
  fi
  local b
  for b in producer consumer; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing (build it, or unset STACK_BIN_DIR)"
  done
  BIN_DIR=$(cd "$BIN_DIR" && pwd)
}

# A path given relative to where the script was called from, made absolute (the services
# run in the state folder).
absolute() {
  case $1 in
    /*) echo "$1" ;;
    *) echo "$PWD/$1" ;;
  esac
}

# The log is kept in SQLite, so it survives `down`/`up`. tansu reads `sqlite:///abs/path` as
# relative to its working folder, hence a relative URL inside that folder.
start_tansu() {
  local dir=$STACK_DIR/tansu url="tcp://127.0.0.1:$KAFKA_PORT"
  launch tansu tansu "$dir" env RUST_LOG="${TANSU_LOG:-warn}" "$(tansu_bin)" broker \
    --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine "sqlite://tansu.db"
  wait_for tansu "Kafka listener on 127.0.0.1:$KAFKA_PORT" port_in_use "$KAFKA_PORT"
}

start_influxd() {
  write_influxd_config
  launch influxd influxd "$STACK_DIR/influxdb" influxd -config "$STACK_DIR/influxdb/influxdb.conf"
  wait_for influxd "answer on /ping" answers_http "http://127.0.0.1:$INFLUXDB_PORT/ping" 204
}

start_prometheus() {
  write_prometheus_config
  launch prometheus prometheus "$STACK_DIR/prometheus" prometheus \
    "--config.file=$STACK_DIR/prometheus/prometheus.yml" \
    "--storage.tsdb.path=$STACK_DIR/prometheus/data" \
    "--web.listen-address=127.0.0.1:$PROMETHEUS_PORT"
  wait_for prometheus "answer on /-/ready" answers_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 200
}

start_producer() {
  launch producer producer "$STACK_DIR" env \
    KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
    PRODUCER_HTTP_ADDR="127.0.0.1:$PRODUCER_PORT" \
    DATASET_DIR="$(absolute "${DATASET_DIR:-$REPO/dataset}")" \
    REPLAY_SPEED="${REPLAY_SPEED:-max}" \
    "$BIN_DIR/producer"
  wait_for producer "readiness (Kafka connected) on /readyz" \
    answers_http "http://127.0.0.1:$PRODUCER_PORT/readyz" 200
}

start_consumer() {
  launch consumer consumer "$STACK_DIR" env \
    KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
    INFLUX_URL="http://127.0.0.1:$INFLUXDB_PORT" \
    INFLUX_API=v1 \
    INFLUX_DB=crypto \
    CONSUMER_HTTP_ADDR="127.0.0.1:$CONSUMER_PORT" \
    "$BIN_DIR/consumer"
  wait_for consumer "readiness (Kafka and InfluxDB reachable) on /readyz" \
    answers_http "http://127.0.0.1:$CONSUMER_PORT/readyz" 200
}

start_grafana() {
  local bin home
  bin=$(grafana_bin)
  home=$(grafana_home "$bin")
  write_grafana_config
  local args=(--homepath "$home" --config "$STACK_DIR/grafana/grafana.ini")
  if [ "$(basename "$bin")" = grafana ]; then args=(server "${args[@]}"); fi
  launch grafana grafana "$STACK_DIR/grafana" env INFLUX_TOKEN="${INFLUX_TOKEN:-}" "$bin" "${args[@]}"
  wait_for grafana "answer on /api/health" answers_http "http://127.0.0.1:$GRAFANA_PORT/api/health" 200
}

print_urls() {
  cat <<EOF

candlepipe runs (state, logs: $STACK_DIR):
  Kafka (tansu)  127.0.0.1:$KAFKA_PORT          topic candles
  InfluxDB 1.x   http://127.0.0.1:$INFLUXDB_PORT     database crypto (InfluxQL /query)
  Prometheus     http://127.0.0.1:$PROMETHEUS_PORT
  producer       http://127.0.0.1:$PRODUCER_PORT/metrics   /healthz /readyz /mode
  consumer       http://127.0.0.1:$CONSUMER_PORT/metrics   /healthz /readyz
EOF
  if [ -n "$(running_pid grafana)" ]; then
    echo "  Grafana        http://127.0.0.1:$GRAFANA_PORT          (admin / \$GRAFANA_ADMIN_PASSWORD)"
  else
    echo "  Grafana        not started: no grafana or grafana-server on the PATH"
  fi
  echo "Stop it with: scripts/stack.sh down"
}

cmd_up() {
  mkdir -p "$STACK_DIR"
  STACK_DIR=$(cd "$STACK_DIR" && pwd)
  command -v curl >/dev/null 2>&1 || die "curl is needed to check the services (apt-get install curl)"
  # shellcheck disable=SC2046 # one word per service name
  check_ports $(wanted_services) influxd-rpc

  ensure_debian_packages
  ensure_tansu
  export PATH="$HOME/.cargo/bin:$PATH"
  binaries

  # Whatever makes `up` fail from here on (a service that does not come up, Ctrl-C), stop
  # what this run started rather than leave half a stack behind.
  trap 'up_failed $?' EXIT
  local svc
  for svc in $(wanted_services); do
    if [ -n "$(running_pid "$svc")" ]; then
      log "$svc already runs (pid $(running_pid "$svc"))"
      continue
    fi
    if [ "$svc" = influxd ]; then check_ports influxd influxd-rpc; else check_ports "$svc"; fi
    log "starting $svc on 127.0.0.1:$(port_of "$svc")"
    "start_$svc" || exit 1
  done
  trap - EXIT
  print_urls
}

up_failed() {
  if [ "$1" -ne 0 ] && [ ${#STARTED[@]} -gt 0 ]; then
    log "up failed: stopping what this run started (${STARTED[*]}); logs stay in $STACK_DIR"
    TRUST_STARTED=1 stop_services "${STARTED[@]}"
  fi
}

# --- down / status / logs -------------------------------------------------------------------

# SIGTERM (graceful: the producer flushes, the consumer commits), then wait; SIGKILL what is
# still there after STACK_STOP_TIMEOUT.
stop_services() {
  local svc pid pids=() names=()
  for svc in "$@"; do
    pid=$(running_pid "$svc")
    if [ -n "$pid" ]; then
      log "stopping $svc (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$svc")
    fi
  done
  local deadline=$((SECONDS + STACK_STOP_TIMEOUT)) left i
  while :; do
    left=()
    for i in "${!pids[@]}"; do
      if pid_alive "${pids[$i]}"; then left+=("$i"); fi
    done
    [ ${#left[@]} -gt 0 ] || break
    if [ "$SECONDS" -ge "$deadline" ]; then
      for i in "${left[@]}"; do
        log "${names[$i]} (pid ${pids[$i]}) still runs after ${STACK_STOP_TIMEOUT}s: SIGKILL"
        kill -KILL "${pids[$i]}" 2>/dev/null || true
      done
      deadline=$((SECONDS + 10))
    fi
    sleep 0.2
  done
  for svc in "$@"; do rm -f "$(pid_file "$svc")"; done
}

cmd_down() {
  local purge=0
  case ${1:-} in
    -v | --volumes) purge=1 ;;
    "") ;;
    *) die "down: unknown option $1 (use -v to delete the data too)" ;;
  esac
  if [ ! -d "$STACK_DIR" ]; then
    log "nothing runs ($STACK_DIR does not exist)"
    return
  fi
  local reversed=() i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do reversed+=("${SERVICES[$i]}"); done
  stop_services "${reversed[@]}"
  if [ "$purge" = 1 ]; then
    log "deleting the stack's data and logs in $STACK_DIR"
    rm -rf "$STACK_DIR"/{tansu,influxdb,prometheus,grafana} "$STACK_DIR"/*.log
  fi
  log "stopped"
}

cmd_status() {
  local svc pid port health rc=0
  printf '%-11s %-8s %-7s %-6s %s\n' SERVICE STATE PID PORT HEALTH
  for svc in "${SERVICES[@]}"; do
    pid=$(running_pid "$svc")
    port=$(port_of "$svc")
    if [ -z "$pid" ]; then
      # Grafana is optional: only its absence after a start counts as down.
      if [ "$svc" != grafana ] || [ -f "$(pid_file "$svc")" ]; then rc=3; fi
      printf '%-11s %-8s %-7s %-6s %s\n' "$svc" stopped - "$port" -
      continue
    fi
    case $svc in
      tansu) if port_in_use "$port"; then health=listening; else health="not listening"; fi ;;
      influxd) health="/ping $(http_status "http://127.0.0.1:$port/ping")" ;;
      prometheus) health="/-/ready $(http_status "http://127.0.0.1:$port/-/ready")" ;;
      producer | consumer) health="/readyz $(http_status "http://127.0.0.1:$port/readyz")" ;;
      grafana) health="/api/health $(http_status "http://127.0.0.1:$port/api/health")" ;;
    esac
    printf '%-11s %-8s %-7s %-6s %s\n' "$svc" running "$pid" "$port" "$health"
  done
  return "$rc"
}

cmd_logs() {
  local follow=0
  if [ "${1:-}" = -f ]; then
    follow=1
    shift
  fi
  local svcs=("$@") files=() svc
  [ ${#svcs[@]} -gt 0 ] || svcs=("${SERVICES[@]}")
  for svc in "${svcs[@]}"; do
    [ -f "$(log_file "$svc")" ] && files+=("$(log_file "$svc")")
  done
  [ ${#files[@]} -gt 0 ] || die "no logs in $STACK_DIR"
  if [ "$follow" = 1 ]; then
    exec tail -n 20 -F "${files[@]}"
  fi
  tail -n "${STACK_LOG_LINES:-40}" "${files[@]}"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

case ${1:-} in
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
