#!/usr/bin/env bash
# The candlepipe stack from native binaries, for machines without Docker (and for this
# development environment). It mirrors docker-compose.yml: Apache Kafka in KRaft mode (one
# node, broker and controller), InfluxDB 2, Alertmanager, Prometheus, the producer and the
# consumer, plus Grafana when a `grafana`/`grafana-server` binary is on the PATH. Everything
# listens on 127.0.0.1 only.
#
#   scripts/stack.sh up             install what is missing, build, start, wait, print URLs
#   scripts/stack.sh status         what runs (exit 0 when every started service runs, 3 if not)
#   scripts/stack.sh logs [-f] [service...]    kafka influxdb alertmanager prometheus producer
#                                               consumer grafana
#   scripts/stack.sh restart [service...]     stop the services (default: all), then `up`:
#                                               they start with the settings given now
#   scripts/stack.sh down [-v]      stop what `up` started (-v also deletes the stored data)
#
# Each started service's settings (its ports, the ports it talks to, and what it reads from
# the environment) are recorded in STACK_DIR/<service>.settings. While it runs, those win:
# `status` probes the ports it was started on, and `up` keeps them and names every new
# value it ignored (apply them with `restart <service>`).
#
# State lives in STACK_DIR (default .stack/ in the repo, git-ignored): one pid file and one
# log per service, generated configs, and the data (Kafka's log, InfluxDB, Prometheus TSDB)
# that survives `down`/`up`. `down` stops only the processes named by those pid files, and
# only if the pid still runs the program it started (a reused pid is left alone).
#
# Settings (environment variables; the names and defaults are those of .env.example):
#   KAFKA_PORT=9092 KAFKA_CONTROLLER_PORT=9093 INFLUXDB_PORT=8086 PROMETHEUS_PORT=9090
#   GRAFANA_PORT=3000 PRODUCER_PORT=9101 CONSUMER_PORT=9102 ALERTMANAGER_PORT=9094
#                          loopback ports; `up` refuses to start when one is taken.
#                          (Alertmanager's usual 9093, compose's default, is Kafka's
#                          controller port here.)
#   KAFKA_PARTITIONS=6     partitions of the `candles` topic when `up` creates it.
#   KAFKA_HEAP_OPTS        the broker JVM's heap (default "-Xms128m -Xmx512m").
#   INFLUXDB_ADMIN_USER INFLUXDB_ADMIN_PASSWORD INFLUXDB_ORG INFLUXDB_TOKEN
#                          InfluxDB's first-start setup (user, org, bucket `crypto`, token);
#                          the consumer writes with INFLUXDB_TOKEN.
#   INFLUXDB_READ_USER INFLUXDB_READ_PASSWORD
#                          Grafana's read-only v1 credential on bucket `crypto`, created when
#                          missing (as compose's influxdb/initdb script does at first start).
#   STACK_DIR              state folder (default <repo>/.stack).
#   STACK_BIN_DIR          folder holding already built `producer` and `consumer`; unset:
#                          `cargo build --workspace --bins --locked` (the debug build
#                          scripts/test.sh makes too) builds them.
#   STACK_TIMEOUT=120      seconds a service may take to answer after it started.
#   STACK_STOP_TIMEOUT=45  seconds `down` waits for a graceful exit before SIGKILL.
#   Anything the binaries read passes through: REPLAY_SPEED (default here: max, as in
#   docker compose), REPLAY_BACKFILL, PRODUCER_MODE, SYMBOLS, DATASET_DIR, RUST_LOG, ...
#   Grafana: GRAFANA_HOME (its homepath), GRAFANA_ADMIN_PASSWORD, GRAFANA_ANONYMOUS_ENABLED.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The environment as given, before the defaults below fill it in: what `up` compares with
# the settings a running service was started with.
declare -A GIVEN=()
while IFS='=' read -r -d '' name value; do GIVEN[$name]=$value; done < <(env -0)
# shellcheck source=scripts/lib/install.sh
source "$REPO/scripts/lib/install.sh"

STACK_DIR=${STACK_DIR:-$REPO/.stack}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
INFLUXDB_PORT=${INFLUXDB_PORT:-8086}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
GRAFANA_PORT=${GRAFANA_PORT:-3000}
PRODUCER_PORT=${PRODUCER_PORT:-9101}
CONSUMER_PORT=${CONSUMER_PORT:-9102}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9094}
STACK_TIMEOUT=${STACK_TIMEOUT:-120}
STACK_STOP_TIMEOUT=${STACK_STOP_TIMEOUT:-45}

# As docker-compose.yml (kafka-init, the consumer) and .env.example.
KAFKA_TOPIC=${KAFKA_TOPIC:-candles}
KAFKA_DLQ_TOPIC=${KAFKA_DLQ_TOPIC:-candles.dlq}
KAFKA_PARTITIONS=${KAFKA_PARTITIONS:-6}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
INFLUXDB_ADMIN_USER=${INFLUXDB_ADMIN_USER:-candlepipe}
INFLUXDB_ADMIN_PASSWORD=${INFLUXDB_ADMIN_PASSWORD:-candlepipe-laptop-only}
INFLUXDB_ORG=${INFLUXDB_ORG:-candlepipe}
INFLUXDB_TOKEN=${INFLUXDB_TOKEN:-candlepipe-laptop-only-token}
INFLUXDB_READ_USER=${INFLUXDB_READ_USER:-grafana}
INFLUXDB_READ_PASSWORD=${INFLUXDB_READ_PASSWORD:-candlepipe-laptop-only-read}
INFLUXDB_BUCKET=crypto

# Start order; `down` stops the clients first, then the servers.
SERVICES=(kafka influxdb alertmanager prometheus producer consumer grafana)
SERVERS=(prometheus alertmanager influxdb kafka)
CLIENTS=(grafana consumer producer)
# What an older stack.sh ran (tansu, InfluxDB 1.x): `down` still stops it.
LEGACY_SERVICES=(tansu influxd)

die() {
  printf 'stack.sh: %s\n' "$*" >&2
  exit 1
}

pid_file() { echo "$STACK_DIR/$1.pid"; }
log_file() { echo "$STACK_DIR/$1.log"; }

# The variables holding the loopback ports a service listens on (the first is its main one).
port_vars_of() {
  case $1 in
    kafka) echo KAFKA_PORT KAFKA_CONTROLLER_PORT ;;
    influxdb) echo INFLUXDB_PORT ;;
    prometheus) echo PROMETHEUS_PORT ;;
    alertmanager) echo ALERTMANAGER_PORT ;;
    producer) echo PRODUCER_PORT ;;
    consumer) echo CONSUMER_PORT ;;
    grafana) echo GRAFANA_PORT ;;
  esac
}
port_of() {
  local vars
  read -r -a vars <<<"$(port_vars_of "$1")"
  echo "${!vars[0]}"
}

# --- recorded settings -------------------------------------------------------------------------

settings_file() { echo "$STACK_DIR/$1.settings"; }

# The environment variables (besides secrets' files) a binary reads: its --help's `[env: …]`.
binary_env() {
  [ -n "${BIN_DIR:-}" ] && [ -x "$BIN_DIR/$1" ] || return 0
  "$BIN_DIR/$1" --help 2>/dev/null | grep -o '\[env: [A-Z0-9_]*' | cut -c7- | sort -u
}

# The settings a service is started with: its ports, the ports of what it talks to, and what
# it reads from the environment.
settings_of() {
  case $1 in
    kafka) echo KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_HEAP_OPTS ;;
    influxdb) echo INFLUXDB_PORT INFLUXDB_ADMIN_USER INFLUXDB_ADMIN_PASSWORD INFLUXDB_ORG \
      INFLUXDB_TOKEN INFLUXDB_READ_USER INFLUXDB_READ_PASSWORD ;;
    alertmanager) echo ALERTMANAGER_PORT ;;
    prometheus) echo PROMETHEUS_PORT PRODUCER_PORT CONSUMER_PORT INFLUXDB_PORT ALERTMANAGER_PORT ;;
    producer) echo PRODUCER_PORT KAFKA_PORT "$(binary_env producer)" ;;
    consumer) echo CONSUMER_PORT KAFKA_PORT INFLUXDB_PORT INFLUXDB_TOKEN "$(binary_env consumer)" ;;
    grafana) echo GRAFANA_PORT INFLUXDB_PORT PROMETHEUS_PORT GRAFANA_ADMIN_PASSWORD \
      GRAFANA_ANONYMOUS_ENABLED INFLUXDB_READ_USER INFLUXDB_READ_PASSWORD ;;
  esac
}

# A setting's value now: the script's (ports, defaults filled in) or, for what the binaries
# read, as given (empty when unset).
setting_now() {
  if [ -n "${!1+set}" ] && [[ $1 =~ _PORT$|^KAFKA_|^INFLUXDB_|^GRAFANA_ ]]; then
    echo "${!1}"
  else
    echo "${GIVEN[$1]:-}"
  fi
}

record_settings() {
  local var
  for var in $(settings_of "$1"); do
    printf '%s=%s\n' "$var" "$(setting_now "$var")"
  done >"$(settings_file "$1")"
}

# The value `svc` recorded for `var`; fails when it recorded none.
recorded_setting() {
  local file
  file=$(settings_file "$1")
  [ -f "$file" ] || return 1
  grep -m1 "^$2=" "$file" | cut -d= -f2-
}

# Each service's own ports as recorded when it started, while it runs (or, for `status`,
# also when it is stopped): a stack started on other ports keeps them, whatever this
# invocation's environment says.
use_recorded_ports() {
  local svc var value
  for svc in "${SERVICES[@]}"; do
    [ "${1:-}" = all ] || [ -n "$(running_pid "$svc")" ] || continue
    for var in $(port_vars_of "$svc"); do
      if value=$(recorded_setting "$svc" "$var") && [ -n "$value" ]; then
        printf -v "$var" '%s' "$value"
      fi
    done
  done
}

# Names, for each running service, the settings given now that differ from those it runs
# with: `up` leaves a running service alone.
report_ignored() {
  local svc var now was lines=() names=()
  for svc in $(wanted_services); do
    if [ -z "$(running_pid "$svc")" ] || [ ! -f "$(settings_file "$svc")" ]; then continue; fi
    local differs=0
    for var in $(settings_of "$svc"); do
      was=$(recorded_setting "$svc" "$var") || continue
      if [[ $var =~ _PORT$ ]] && [[ " $(port_vars_of "$svc") " == *" $var "* ]]; then
        now=${GIVEN[$var]:-$was} # its own port: kept, so only a value given now differs
      else
        now=$(setting_now "$var")
      fi
      if [ "$now" != "$was" ]; then
        case $var in *TOKEN* | *PASSWORD*) now='(new value)' was='(old value)' ;; esac
        lines+=("$svc runs with $var=${was:-(unset)}; ignored $var=${now:-(unset)}")
        differs=1
      fi
    done
    [ "$differs" = 0 ] || names+=("$svc")
  done
  [ ${#lines[@]} -gt 0 ] || return 0
  printf 'stack.sh: these settings were not applied, because the service already runs:\n' >&2
  printf '  - %s\n' "${lines[@]}" >&2
  printf 'Apply them with: scripts/stack.sh restart %s\n' "${names[*]}" >&2
}

# --- processes ------------------------------------------------------------------------------

# True while `pid` runs (a zombie waiting for its parent to reap it counts as gone).
pid_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [[ $state != Z* ]]
}

# The pid a service's pid file records ("<pid> <program name> [<argument>]"), if any.
recorded_pid() {
  local file pid
  file=$(pid_file "$1")
  [ -f "$file" ] || return 0
  read -r pid _ <"$file" || return 0
  [[ $pid =~ ^[0-9]+$ ]] && echo "$pid"
  return 0
}

# The recorded pid when it still runs the program it started, else nothing: its name must
# match, and so must the argument the pid file names, if any (Kafka's program is `java`, so
# `kafka.Kafka` tells it from any other JVM). Processes this run started are trusted as they
# are (TRUST_STARTED=1): right after `launch` the pid may still be in the `setsid`/`env` exec
# chain.
running_pid() {
  local pid name marker comm args
  pid=$(recorded_pid "$1")
  [ -n "$pid" ] || return 0
  pid_alive "$pid" || return 0
  if [ "${TRUST_STARTED:-0}" = 1 ]; then
    echo "$pid"
    return 0
  fi
  read -r _ name marker <"$(pid_file "$1")" || true
  comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
  # comm is the program name cut to 15 characters (`grafana-server` may exec `grafana`, so
  # a prefix is enough); without ps, trust the pid file.
  if [ -n "$comm" ] && [ -n "$name" ] && [[ ${comm} != "${name:0:15}"* ]]; then
    return 0
  fi
  if [ -n "$comm" ] && [ -n "${marker:-}" ]; then
    args=$(ps -o args= -p "$pid" 2>/dev/null || true)
    [[ $args == *"$marker"* ]] || return 0
  fi
  echo "$pid"
}

# Starts `cmd...` as service `svc` in folder `dir`, in its own session (Ctrl-C in this
# terminal or closing it does not reach it), output appended to the service's log, and
# records its pid with `ident` (the program name, optionally followed by an argument that
# identifies it). Every step execs, so `$!` is the program's own pid.
STARTED=()
launch() {
  local svc=$1 ident=$2 dir=$3
  shift 3
  local log detach=()
  log=$(log_file "$svc")
  mkdir -p "$dir"
  # The command line, without the values of *TOKEN= and *PASSWORD= (logs get shared).
  printf '\n=== %s: starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$(sed -E 's/((TOKEN|PASSWORD)=)[^ ]*/\1(hidden)/g' <<<"$*")" >>"$log"
  if command -v setsid >/dev/null 2>&1; then detach=(setsid); else detach=(nohup); fi
  (cd "$dir" && exec "${detach[@]}" "$@") >>"$log" 2>&1 </dev/null &
  echo "$! $ident" >"$(pid_file "$svc")"
  record_settings "$svc"
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

# Renders template $1 into file $2: each following NAME=value argument replaces @NAME@.
# The templates under scripts/lib/ are the ones services/testkit renders for the tests'
# servers, so the two cannot drift apart.
render_template() {
  local template=$1 out=$2 pair value left
  shift 2
  local args=()
  for pair in "$@"; do
    # sed's replacement text: \, the # delimiter and & (the match) stand for themselves.
    value=${pair#*=}
    value=${value//\\/\\\\}
    value=${value//#/\\#}
    value=${value//&/\\&}
    args+=(-e "s#@${pair%%=*}@#${value}#g")
  done
  {
    printf '# Generated by scripts/stack.sh from %s; rewritten on every start.\n' "${template#"$REPO"/}"
    sed "${args[@]}" "$template"
  } >"$out"
  left=$(grep -v '^[[:space:]]*#' "$out" | grep -o '@[A-Z0-9_]*@' | head -n1 || true)
  [ -z "$left" ] || die "$out: $template needs $left, which stack.sh does not give"
}

# One KRaft node, broker and controller at once, with the settings docker-compose.yml gives
# the apache/kafka image (and services/testkit's Kafka), on loopback ports.
write_kafka_config() {
  local dir=$STACK_DIR/kafka
  mkdir -p "$dir"
  render_template "$REPO/scripts/lib/kafka/server.properties.template" "$dir/server.properties" \
    NODE_ID=1 "VOTERS=1@127.0.0.1:$KAFKA_CONTROLLER_PORT" "PORT=$KAFKA_PORT" \
    "CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT" "LOG_DIRS=$dir/data" REPLICAS=1 MIN_ISR=1
  render_template "$REPO/scripts/lib/kafka/log4j.properties" "$dir/log4j.properties"
}

# influxd 2 with all of its state in $STACK_DIR/influxdb2, as services/testkit's InfluxDB.
# Not .stack/influxdb: an older stack.sh kept InfluxDB 1.x's data there.
write_influxdb_config() {
  local dir=$STACK_DIR/influxdb2
  mkdir -p "$dir"
  render_template "$REPO/scripts/lib/influxdb/config.toml.template" "$dir/config.toml" \
    "DIR=$dir" "PORT=$INFLUXDB_PORT"
}

# prometheus/prometheus.yml names compose services (producer:9101, DNS discovery of every
# consumer replica, alertmanager:9093). The copy here keeps everything (global, rule_files,
# job names, any other job setting) and replaces each job's target discovery by one static
# loopback target, and the Alertmanager targets by this stack's Alertmanager.
# Assumes each scrape job starts with `- job_name:` (the repo's file does).
write_prometheus_config() {
  local dir=$STACK_DIR/prometheus src=$REPO/prometheus
  mkdir -p "$dir"
  local f
  for f in "$src"/*.yml; do
    [ "$(basename "$f")" = prometheus.yml ] || cp "$f" "$dir/"
  done
  awk -v ports="prometheus=$PROMETHEUS_PORT producer=$PRODUCER_PORT consumer=$CONSUMER_PORT influxdb=$INFLUXDB_PORT alertmanager=$ALERTMANAGER_PORT" '
    function indent(s) { match(s, /^ */); return RLENGTH }
    BEGIN {
      n = split(ports, kv, " ")
      for (i = 1; i <= n; i++) { split(kv[i], p, "="); port[p[1]] = p[2] }
      print "# Generated by scripts/stack.sh from prometheus/prometheus.yml: targets on loopback."
    }
    skipping && ($0 ~ /^[ \t]*$/ || indent($0) > skip_indent) { next }
    { skipping = 0 }
    /^[^ #]/ { in_scrape = 0; in_alerting = 0 }
    /^scrape_configs:/ { in_scrape = 1; print; next }
    /^alerting:/ { in_alerting = 1; print; next }
    in_alerting && /^ *(- *)?static_configs:/ {
      match($0, /^ *(- *)?/)
      pad = sprintf("%" RLENGTH + 2 "s", "")
      printf "%sstatic_configs:\n%s- targets: [\"127.0.0.1:%s\"]\n", substr($0, 1, RLENGTH), pad, port["alertmanager"]
      skipping = 1; skip_indent = RLENGTH; next
    }
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

# The repo's alertmanager.yml as compose mounts it: secret files it names under
# /etc/alertmanager/ are read from the repo's alertmanager/ folder instead.
write_alertmanager_config() {
  local dir=$STACK_DIR/alertmanager
  mkdir -p "$dir"
  sed "s#/etc/alertmanager/#$REPO/alertmanager/#g" "$REPO/alertmanager/alertmanager.yml" \
    >"$dir/alertmanager.yml"
  if command -v amtool >/dev/null 2>&1; then
    amtool check-config "$dir/alertmanager.yml" >"$dir/amtool.log" 2>&1 ||
      { cat "$dir/amtool.log" >&2; die "alertmanager/alertmanager.yml is invalid (see above)"; }
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
enabled = ${GRAFANA_ANONYMOUS_ENABLED:-true}
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
  local svc var port taken=() example='' seen=" "
  for svc in "$@"; do
    [ -z "$(running_pid "$svc")" ] || continue
    for var in $(port_vars_of "$svc"); do
      port=${!var}
      if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        die "$var=$port is not a TCP port number"
      fi
      if [[ $seen == *" $port "* ]]; then
        die "port $port is given to two services ($var and another); move one"
      fi
      seen+="$port "
      if port_in_use "$port"; then
        taken+=("127.0.0.1:$port, wanted by $svc (set $var to move it)")
        [ -n "$example" ] || example="$var=$((port + 1000))"
      fi
    done
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

# The producer and consumer: the same debug build scripts/test.sh makes (same command, same
# CARGO_INCREMENTAL), so after the tests nothing is built twice.
binaries() {
  if [ -n "${STACK_BIN_DIR:-}" ]; then
    BIN_DIR=$STACK_BIN_DIR
  else
    log "cargo build --workspace --bins --locked (producer, consumer)"
    (cd "$REPO" && CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}" cargo build --workspace --bins --locked)
    local target=${CARGO_TARGET_DIR:-target}
    case $target in /*) ;; *) target=$REPO/$target ;; esac
    BIN_DIR=$target/debug
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

# A Kafka tool (or the broker) on the jars ensure_kafka fetched: java -cp '<libs>/*' CLASS ...
kafka_java() {
  local class=$1
  shift
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dlog4j.configuration=file:$STACK_DIR/kafka/log4j.properties" \
    -cp "$(kafka_libs)/*" "$class" "$@"
}

# Formats the storage once (when the data folder has no meta.properties yet), with a cluster
# id generated then and kept in the state folder, as `kafka-storage.sh format` does.
format_kafka() {
  local dir=$STACK_DIR/kafka id
  [ ! -f "$dir/data/meta.properties" ] || return 0
  [ ! -s "$dir/cluster.id" ] || id=$(cat "$dir/cluster.id")
  # 16 random bytes, base64url without padding (kafka-storage.sh random-uuid), never starting
  # with `-`: `format -t -abc…` takes it for an option (1 draw in 64; Kafka's own generator
  # draws again too). A stored one from before that rule is replaced: nothing is formatted yet.
  while [ -z "${id:-}" ] || [ "${id#-}" != "$id" ]; do
    id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    echo "$id" >"$dir/cluster.id"
  done
  log "formatting Kafka's storage (cluster id $id)"
  printf '\n=== %s: formatting the storage\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$(log_file kafka)"
  kafka_java kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
    >>"$(log_file kafka)" 2>&1 ||
    { log_tail kafka; die "formatting Kafka's storage in $dir/data failed"; }
}

start_kafka() {
  local dir=$STACK_DIR/kafka heap
  write_kafka_config
  format_kafka
  read -r -a heap <<<"$KAFKA_HEAP_OPTS"
  launch kafka "java kafka.Kafka" "$dir" java "${heap[@]}" -Djava.awt.headless=true \
    "-Dlog4j.configuration=file:$dir/log4j.properties" \
    -cp "$(kafka_libs)/*" kafka.Kafka "$dir/server.properties"
  wait_for kafka "Kafka listener on 127.0.0.1:$KAFKA_PORT" port_in_use "$KAFKA_PORT"
}

# kafka-topics.sh --create --if-not-exists: true once the broker created the topic or has it.
# Extra arguments are topic configs (`--config key=value`).
create_topic() {
  local topic=$1 partitions=$2
  shift 2
  printf '\n=== %s: creating topic %s unless it exists (partitions: %s)\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$topic" "$partitions" >>"$(log_file kafka)"
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --create --if-not-exists --topic "$topic" --partitions "$partitions" --replication-factor 1 \
    "$@" >>"$(log_file kafka)" 2>&1
}

# What compose's one-shot kafka-init does on every `up`: the topics the consumers scale to.
# An existing topic is left alone. The first creation also waits for the broker to serve.
init_kafka_topics() {
  [[ $KAFKA_PARTITIONS =~ ^[1-9][0-9]*$ ]] || die "KAFKA_PARTITIONS=$KAFKA_PARTITIONS is not a partition count"
  log "creating topics $KAFKA_TOPIC ($KAFKA_PARTITIONS partitions) and $KAFKA_DLQ_TOPIC unless they exist"
  # `|| return`: callers test the result, which switches `set -e` off in here.
  # The candle topic is the log of record: it keeps everything, as compose's kafka-init says.
  wait_for kafka "topic $KAFKA_TOPIC" create_topic "$KAFKA_TOPIC" "$KAFKA_PARTITIONS" \
    --config retention.ms=-1 --config retention.bytes=-1 || return 1
  wait_for kafka "topic $KAFKA_DLQ_TOPIC" create_topic "$KAFKA_DLQ_TOPIC" 1
}

# A JSON string literal.
json_string() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# InfluxDB's first-start setup, as DOCKER_INFLUXDB_INIT_* does it in compose: user, org,
# bucket `crypto` and the all-access token. Later starts skip it (InfluxDB says so), then
# check that INFLUXDB_TOKEN still opens the bucket, so a changed token fails here rather than
# in the consumer.
setup_influxdb() {
  local url=http://127.0.0.1:$INFLUXDB_PORT body status answer
  local allowed='"allowed":[[:space:]]*true' bucket="\"name\":[[:space:]]*\"$INFLUXDB_BUCKET\""
  answer=$(curl -s --max-time 10 "$url/api/v2/setup" || true)
  if [[ $answer =~ $allowed ]]; then
    log "setting InfluxDB up: org $INFLUXDB_ORG, bucket $INFLUXDB_BUCKET, user $INFLUXDB_ADMIN_USER"
    body=$(printf '{"username":%s,"password":%s,"org":%s,"bucket":%s,"token":%s}' \
      "$(json_string "$INFLUXDB_ADMIN_USER")" "$(json_string "$INFLUXDB_ADMIN_PASSWORD")" \
      "$(json_string "$INFLUXDB_ORG")" "$(json_string "$INFLUXDB_BUCKET")" \
      "$(json_string "$INFLUXDB_TOKEN")")
    # The secrets go through stdin, not the command line (which `ps` shows everyone).
    answer=$(printf '%s' "$body" | curl -s --max-time 30 -w '\n%{http_code}' \
      -H 'Content-Type: application/json' --data-binary @- "$url/api/v2/setup" || true)
    status=${answer##*$'\n'}
    [ "$status" = 201 ] ||
      die "InfluxDB's setup answered ${status:-nothing}: ${answer%$'\n'*} (INFLUXDB_ADMIN_PASSWORD needs 8 characters or more)"
  fi
  answer=$(influx_api -G --data-urlencode "org=$INFLUXDB_ORG" \
    --data-urlencode "name=$INFLUXDB_BUCKET" "$url/api/v2/buckets")
  status=${answer##*$'\n'}
  case $status in
    200)
      [[ $answer =~ $bucket ]] ||
        die "InfluxDB has no bucket $INFLUXDB_BUCKET in org $INFLUXDB_ORG (scripts/stack.sh down -v starts over)" ;;
    401)
      die "INFLUXDB_TOKEN is not the token InfluxDB in $STACK_DIR/influxdb2 was set up with: put the original back, or start over with scripts/stack.sh down -v" ;;
    *)
      die "InfluxDB answered ${status:-nothing} for bucket $INFLUXDB_BUCKET in org $INFLUXDB_ORG: ${answer%$'\n'*}" ;;
  esac
}

# curl with the admin token (in a config read from a pipe, so `ps` never shows it; stdin
# stays free for a request body) and `args`; prints the body, a newline and the HTTP status.
influx_api() {
  local header=${INFLUXDB_TOKEN//\\/\\\\}
  header=${header//\"/\\\"}
  curl -s --max-time 30 -w '\n%{http_code}' \
    -K <(printf 'header = "Authorization: Token %s"\n' "$header") "$@" || true
}

# Grafana's read-only credential, as compose's influxdb/initdb/create-grafana-reader.sh makes
# it at the first start (`influx v1 auth create --read-bucket`, here through the same HTTP
# API): a v1 authorization INFLUXDB_READ_USER / INFLUXDB_READ_PASSWORD that may only read
# bucket `crypto`. Grafana's datasource sends it as Basic credentials, never the admin token.
# An existing one keeps its permissions and gets INFLUXDB_READ_PASSWORD (8 to 72 characters).
create_grafana_reader() {
  local url=http://127.0.0.1:$INFLUXDB_PORT answer status bucket_id org_id id
  local id_re='"id":[[:space:]]*"([0-9a-f]+)"'
  answer=$(influx_api -G --data-urlencode "org=$INFLUXDB_ORG" \
    --data-urlencode "token=$INFLUXDB_READ_USER" "$url/private/legacy/authorizations")
  status=${answer##*$'\n'}
  case $status in
    200)
      [[ $answer =~ $id_re ]] || die "v1 authorization $INFLUXDB_READ_USER without id: $answer"
      id=${BASH_REMATCH[1]} ;;
    404)
      answer=$(influx_api -G --data-urlencode "org=$INFLUXDB_ORG" \
        --data-urlencode "name=$INFLUXDB_BUCKET" "$url/api/v2/buckets")
      # The first "id" of the answer is the bucket's (`links` holds none).
      [[ $answer =~ $id_re ]] ||
        die "InfluxDB has no bucket $INFLUXDB_BUCKET in org $INFLUXDB_ORG: ${answer%$'\n'*}"
      bucket_id=${BASH_REMATCH[1]}
      [[ $answer =~ \"orgID\":[[:space:]]*\"([0-9a-f]+)\" ]] || die "bucket without orgID: $answer"
      org_id=${BASH_REMATCH[1]}
      log "creating Grafana's read-only InfluxDB credential $INFLUXDB_READ_USER (reads bucket $INFLUXDB_BUCKET only)"
      answer=$(printf '{"orgID":"%s","token":%s,"description":"Grafana: read-only %s","permissions":[{"action":"read","resource":{"type":"buckets","id":"%s","orgID":"%s"}}]}' \
        "$org_id" "$(json_string "$INFLUXDB_READ_USER")" "$INFLUXDB_BUCKET" "$bucket_id" "$org_id" |
        influx_api -H 'Content-Type: application/json' --data-binary @- \
          "$url/private/legacy/authorizations")
      status=${answer##*$'\n'}
      [ "$status" = 201 ] ||
        die "creating v1 authorization $INFLUXDB_READ_USER: ${status:-nothing} ${answer%$'\n'*}"
      [[ $answer =~ $id_re ]] || die "v1 authorization without id: $answer"
      id=${BASH_REMATCH[1]} ;;
    *) die "InfluxDB answered ${status:-nothing} listing v1 authorizations: ${answer%$'\n'*}" ;;
  esac
  # The password through stdin too.
  answer=$(printf '{"password":%s}' "$(json_string "$INFLUXDB_READ_PASSWORD")" |
    influx_api -H 'Content-Type: application/json' --data-binary @- \
      "$url/private/legacy/authorizations/$id/password")
  status=${answer##*$'\n'}
  [ "$status" = 204 ] ||
    die "setting the password of $INFLUXDB_READ_USER: ${status:-nothing} ${answer%$'\n'*} (INFLUXDB_READ_PASSWORD)"
}

start_influxdb() {
  local dir=$STACK_DIR/influxdb2
  write_influxdb_config
  # Its config lookup starts in the working folder and INFLUXD_CONFIG_PATH: both the state,
  # where write_influxdb_config put config.toml.
  launch influxdb influxd "$dir" env INFLUXD_CONFIG_PATH="$dir" "$(influxd2_bin)" run
  wait_for influxdb "answer on /health" answers_http "http://127.0.0.1:$INFLUXDB_PORT/health" 200 || return 1
  setup_influxdb
  create_grafana_reader
}

# Upstream names it `alertmanager`, Debian's prometheus-alertmanager package
# `prometheus-alertmanager`.
alertmanager_bin() {
  command -v alertmanager 2>/dev/null || command -v prometheus-alertmanager 2>/dev/null || true
}

start_alertmanager() {
  local bin
  bin=$(alertmanager_bin)
  [ -n "$bin" ] || die "Alertmanager is not installed: apt-get install prometheus-alertmanager"
  write_alertmanager_config
  # One instance: no gossip cluster (its default port 9094 stays closed).
  launch alertmanager "$(basename "$bin")" "$STACK_DIR/alertmanager" "$bin" \
    "--config.file=$STACK_DIR/alertmanager/alertmanager.yml" \
    "--storage.path=$STACK_DIR/alertmanager/data" \
    "--web.listen-address=127.0.0.1:$ALERTMANAGER_PORT" \
    --cluster.listen-address=
  wait_for alertmanager "answer on /-/ready" answers_http "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" 200
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
    KAFKA_TOPIC="$KAFKA_TOPIC" \
    KAFKA_PARTITIONS="$KAFKA_PARTITIONS" \
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
    KAFKA_TOPIC="$KAFKA_TOPIC" \
    KAFKA_DLQ_TOPIC="$KAFKA_DLQ_TOPIC" \
    INFLUX_URL="http://127.0.0.1:$INFLUXDB_PORT" \
    INFLUX_API=v2 \
    INFLUX_ORG="$INFLUXDB_ORG" \
    INFLUX_BUCKET="$INFLUXDB_BUCKET" \
    INFLUX_TOKEN="$INFLUXDB_TOKEN" \
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
  # The InfluxDB datasource sends Basic ${INFLUX_READ_USER}:${INFLUX_READ_PASSWORD}
  # (provisioning): the read-only credential, never the admin token.
  launch grafana grafana "$STACK_DIR/grafana" env INFLUX_READ_USER="$INFLUXDB_READ_USER" \
    INFLUX_READ_PASSWORD="$INFLUXDB_READ_PASSWORD" "$bin" "${args[@]}"
  wait_for grafana "answer on /api/health" answers_http "http://127.0.0.1:$GRAFANA_PORT/api/health" 200
}

print_urls() {
  cat <<EOF

candlepipe runs (state, logs: $STACK_DIR):
  Kafka          127.0.0.1:$KAFKA_PORT          topics $KAFKA_TOPIC, $KAFKA_DLQ_TOPIC
  InfluxDB 2     http://127.0.0.1:$INFLUXDB_PORT     org $INFLUXDB_ORG, bucket $INFLUXDB_BUCKET (user $INFLUXDB_ADMIN_USER, token \$INFLUXDB_TOKEN)
  Prometheus     http://127.0.0.1:$PROMETHEUS_PORT
  Alertmanager   http://127.0.0.1:$ALERTMANAGER_PORT     receiver \`default\` in alertmanager/alertmanager.yml
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
  local svc
  for svc in "${LEGACY_SERVICES[@]}"; do
    [ -z "$(running_pid "$svc")" ] ||
      die "$svc, started by an older scripts/stack.sh, still runs: stop it with scripts/stack.sh down"
  done
  use_recorded_ports
  # shellcheck disable=SC2046 # one word per service name
  check_ports $(wanted_services)

  ensure_debian_packages
  ensure_kafka
  ensure_influxdb2
  export PATH="$HOME/.cargo/bin:$PATH"
  binaries
  report_ignored

  # Whatever makes `up` fail from here on (a service that does not come up, Ctrl-C), stop
  # what this run started rather than leave half a stack behind.
  trap 'up_failed $?' EXIT
  for svc in $(wanted_services); do
    if [ -n "$(running_pid "$svc")" ]; then
      log "$svc already runs (pid $(running_pid "$svc"))"
    else
      check_ports "$svc"
      log "starting $svc on 127.0.0.1:$(port_of "$svc")"
      "start_$svc" || exit 1
    fi
    if [ "$svc" = kafka ]; then init_kafka_topics || exit 1; fi
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

# SIGTERM (graceful: the producer flushes, the consumer commits, Kafka shuts down cleanly),
# then wait; SIGKILL what is still there after STACK_STOP_TIMEOUT.
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
  for svc in "$@"; do rm -f "$(pid_file "$svc")" "$(settings_file "$svc")"; done
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
  # The clients first, while Kafka and InfluxDB still take their last flush and commit.
  stop_services "${CLIENTS[@]}"
  stop_services "${SERVERS[@]}" "${LEGACY_SERVICES[@]}"
  if [ "$purge" = 1 ]; then
    log "deleting the stack's data and logs in $STACK_DIR"
    rm -rf "$STACK_DIR"/{kafka,influxdb2,alertmanager,prometheus,grafana} "$STACK_DIR"/*.log
    # What an older stack.sh stored (tansu's log, InfluxDB 1.x).
    rm -rf "$STACK_DIR"/{tansu,influxdb}
  fi
  log "stopped"
}

cmd_status() {
  local svc pid port health rc=0
  use_recorded_ports all
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
      kafka) if port_in_use "$port"; then health=listening; else health="not listening"; fi ;;
      influxdb) health="/health $(http_status "http://127.0.0.1:$port/health")" ;;
      prometheus | alertmanager) health="/-/ready $(http_status "http://127.0.0.1:$port/-/ready")" ;;
      producer | consumer) health="/readyz $(http_status "http://127.0.0.1:$port/readyz")" ;;
      grafana) health="/api/health $(http_status "http://127.0.0.1:$port/api/health")" ;;
    esac
    printf '%-11s %-8s %-7s %-6s %s\n' "$svc" running "$pid" "$port" "$health"
  done
  return "$rc"
}

# Stops the given services (default: every one), clients first, then runs `up`.
cmd_restart() {
  local svc given=() order=()
  for svc in "$@"; do
    [[ " ${SERVICES[*]} " == *" $svc "* ]] ||
      die "restart: no service $svc (the services: ${SERVICES[*]})"
  done
  [ $# -gt 0 ] && given=("$@") || given=("${SERVICES[@]}")
  for svc in "${CLIENTS[@]}" "${SERVERS[@]}"; do
    [[ " ${given[*]} " != *" $svc "* ]] || order+=("$svc")
  done
  if [ -d "$STACK_DIR" ]; then stop_services "${order[@]}"; fi
  cmd_up
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
    [[ " ${SERVICES[*]} " == *" $svc "* ]] ||
      die "logs: no service $svc (the services: ${SERVICES[*]})"
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
  restart) shift; cmd_restart "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
