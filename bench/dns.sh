#!/usr/bin/env bash
# bench/dns.sh — the DNS and memory benchmark of the real `muster` agent against the Bind9 and
# Unbound anchors of the shared harness (../shared/bench/dns-anchor.sh), same files, same
# settings, same run. Run as root (the harness installs packages with apt and raises the
# scheduler priority of its measured windows).
#
#   bench/dns.sh                      build, install, measure, print the summary
#   MODE=unpinned REPS=5 bench/dns.sh
#
# What it does (everything on 127.0.0.1):
#   1. cargo build --release -p muster; dns-anchor.sh install and gen.
#   2. dns-anchor.sh start $MODE: the upstream nsd (example.test on :5400) and the anchors
#      (Bind9 authoritative for the same `consul` records on :8600, Unbound forwarding to the
#      upstream on :5301, and the harness's Bind9 forwarder, unused here).
#   3. The agent: a single bootstrapping server (bootstrap_expect 1) with a fresh temp data_dir,
#      HTTP/DNS/RPC on free loopback ports, recursors = the upstream; waits for the ready line
#      and a leader. Pinned mode puts it on SERVER_CPU like the anchors (the harness's pinned
#      placement: servers on CPU 1 with one worker, dnsperf on CPU 0).
#   4. CONSUL_HTTP=<agent> dns-anchor.sh register (100 nodes, 300 instances through
#      /v1/catalog/register), then waits until DNS answers them.
#   5. Saturating runs (dnsperf, DURATION s each, REPS clean runs, the systems interleaved):
#        muster-consul   vs bind-auth-consul   (query set consul)
#        muster-fwd-hit  vs unbound-fwd-hit    (query set fwd-hit: forwarder cache hits)
#      then `consul` at a fixed rate of half muster's median qps, for both muster and Bind.
#      TARGET_PIDS is the server's PID, so srv_us_per_q is its CPU per answered query.
#   6. Memory: VmRSS/VmHWM of the DNS agent after the runs; then a fresh agent holding 100
#      services with 300 checks it runs itself (TCP + HTTP against a loopback listener this
#      script starts, every CHECK_INTERVAL, plus a TTL check), registered through
#      /v1/agent/service/register; waits until all are passing locally and in the catalog,
#      settles MEM_SETTLE s, reads /proc/<pid>/status.
#   7. bench/summary.py: medians and the targets of issue 2 with met / NO.
#
# Knobs (env): MODE=pinned|unpinned, REPS=3, DURATION=10 (s per run), MAX_EXTRA=2 (extra
#   attempts per run when the box was busy: clean=no), SERVER_CPU=1, WORK=/tmp/muster-bench,
#   RESULTS (file), ANCHOR (harness path), BUILD=0 (use the existing binary), INSTALL=0,
#   MEM_SETTLE=30, CHECK_INTERVAL=10s, CARGO_TARGET_DIR (where the binary is), HALF (the
#   fixed rate of the latency runs; default half of muster's median saturating qps),
#   SUITES="ceiling consul fwd-hit latency memory" (restrict what is measured; ceiling = the
#   harness's trivial UDP echo responder, tools/udpecho.rs, run like a server: the physical
#   limit of this box for qps and CPU per query).
#
# Bounds: every dnsperf run is bounded by the harness (-l DURATION); every wait loop here has
# a fixed retry count; on exit it stops only what it started, by PID: the agents and the check
# listener here, the harness's servers through `dns-anchor.sh stop` (its recorded PIDs).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ANCHOR=${ANCHOR:-$(cd "$ROOT/.." && pwd)/shared/bench/dns-anchor.sh}
export WORK=${WORK:-/tmp/muster-bench}
MODE=${MODE:-pinned}
REPS=${REPS:-3}
MAX_EXTRA=${MAX_EXTRA:-2}
export DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-1}
BUILD=${BUILD:-1}
INSTALL=${INSTALL:-1}
MEM_SETTLE=${MEM_SETTLE:-30}
CHECK_INTERVAL=${CHECK_INTERVAL:-10s}
SUITES=${SUITES:-ceiling consul fwd-hit latency memory}
ECHO_PORT=${ECHO_PORT:-5399}
UP_PORT=${UP_PORT:-5400}
AUTH_PORT=${AUTH_PORT:-8600}
UNB_PORT=${UNB_PORT:-5301}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/muster}
mkdir -p "$WORK/results"
export RESULTS=${RESULTS:-$WORK/results/muster-$(date +%Y%m%d-%H%M%S).txt}

log() { echo "[bench] $*" >&2; }
want() { [[ " $SUITES " == *" $1 "* ]]; }

case $MODE in
  pinned) PRE="taskset -c $SERVER_CPU"; PIN=1 ;;
  unpinned) PRE=""; PIN=0 ;;
  *) echo "MODE must be pinned or unpinned" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- processes we start
AGENT_PID=""
ECHO_PID=""
MEM_PID=""
LISTENER_PID=""
ANCHORS_UP=0

stop_pid() { # pid: TERM, wait up to 15 s, then KILL
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$ECHO_PID"; ECHO_PID=""
  stop_pid "$AGENT_PID"; AGENT_PID=""
  stop_pid "$MEM_PID"; MEM_PID=""
  stop_pid "$LISTENER_PID"; LISTENER_PID=""
  ((ANCHORS_UP)) && "$ANCHOR" stop || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_agent NAME: a single-server agent with a fresh data dir; sets STARTED_PID, HTTP, DNS
start_agent() {
  local name=$1 dir=$WORK/$1 i
  rm -rf "$dir"; mkdir -p "$dir/data"
  cat >"$dir/agent.json" <<EOF
{
  "node_name": "$name",
  "datacenter": "dc1",
  "data_dir": "$dir/data",
  "server": true,
  "bootstrap_expect": 1,
  "bind_addr": "127.0.0.1",
  "client_addr": "127.0.0.1",
  "ports": {"http": 0, "dns": 0, "server": 0, "serf_lan": 0, "serf_wan": -1},
  "recursors": ["127.0.0.1:$UP_PORT"],
  "log_level": "WARN"
}
EOF
  # taskset execs the agent, so $! is the agent's PID
  $PRE "$BIN" agent -config-file "$dir/agent.json" >"$dir/agent.log" 2>&1 &
  STARTED_PID=$!
  for i in $(seq 1 100); do
    grep -q '^==> muster ready:' "$dir/agent.log" && break
    kill -0 "$STARTED_PID" 2>/dev/null || { cat "$dir/agent.log" >&2; return 1; }
    sleep 0.1
  done
  HTTP=$(grep -o 'http=[^ ]*' "$dir/agent.log" | head -1 | cut -d= -f2)
  DNS=$(grep -o 'dns=[^ ]*' "$dir/agent.log" | head -1 | cut -d= -f2)
  [[ -n $HTTP && -n $DNS ]] || { log "no ready line from $name"; cat "$dir/agent.log" >&2; return 1; }
  for i in $(seq 1 100); do
    [[ $(curl -s -m 2 "http://$HTTP/v1/status/leader" || true) == *:* ]] && break
    sleep 0.1
  done
  [[ $(curl -s -m 2 "http://$HTTP/v1/status/leader" || true) == *:* ]] || { log "$name: no leader"; return 1; }
  log "$name up: pid $STARTED_PID http=$HTTP dns=$DNS ($MODE)"
}

# mem_line NAME PID SERVICES CHECKS: VmRSS/VmHWM from /proc, one MEMORY line in RESULTS
mem_line() {
  local st=/proc/$2/status line
  line="MEMORY name=$1 rss_kb=$(awk '/^VmRSS:/{print $2}' "$st") hwm_kb=$(awk '/^VmHWM:/{print $2}' "$st") threads=$(awk '/^Threads:/{print $2}' "$st") services=$3 checks=$4 mode=$MODE"
  echo "$line" | tee -a "$RESULTS"
}

# measure NAME QSET TARGET PIDS [RATE]: one clean run (up to 1+MAX_EXTRA attempts)
measure() {
  local name=$1 qs=$2 target=$3 pids=$4 rate=${5:-max} att line
  for att in $(seq 1 $((1 + MAX_EXTRA))); do
    line=$(MODE=$MODE RUN=$RUN PIN=$PIN RATE=$rate TARGET=$target TARGET_PIDS="$pids" \
      "$ANCHOR" run "$qs" "$name" | grep '^RESULT' | tail -1 || true)
    echo "$line" | cut -c1-220 >&2
    [[ $line == *" clean=yes"* ]] && return 0
    log "$name: run not clean (foreign load), again"
  done
}

# ---------------------------------------------------------------- 1. build, install, gen
if ((BUILD)); then
  log "cargo build --release -p muster (target dir $TARGET_DIR)"
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p muster)
fi
[[ -x $BIN ]] || { echo "no binary at $BIN (BUILD=1 or CARGO_TARGET_DIR)" >&2; exit 1; }
if ((INSTALL)); then
  # its version banner (`unbound -V | head -1` under pipefail) can fail on SIGPIPE after the
  # packages are in place, so judge the install by the tools themselves
  "$ANCHOR" install >&2 || true
fi
for tool in named nsd unbound dnsperf dig taskset curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (INSTALL=1 installs the harness tools)" >&2; exit 1; }
done
"$ANCHOR" gen >&2

{
  echo "# muster DNS bench $(date -u +%FT%TZ) mode=$MODE reps=$REPS duration=$DURATION"
  echo "# host $(uname -r) cpus=$(nproc) $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-git)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo +dirty) load=$(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RESULTS" >&2

# ---------------------------------------------------------------- 2. anchors and upstream
ANCHORS_UP=1
"$ANCHOR" start "$MODE" >&2
AUTH_PID=$(cat "$WORK/pids/auth")
UNB_PID=$(cat "$WORK/pids/fwd-unbound")

# ---------------------------------------------------------------- 3. the agent, 4. the catalog
start_agent muster-dns
AGENT_PID=$STARTED_PID
CONSUL_HTTP=$HTTP "$ANCHOR" register >&2
dig_count() { dig +short +time=1 +tries=1 @"${DNS%:*}" -p "${DNS##*:}" "$1" "$2" 2>/dev/null | grep -c . || true; }
for i in $(seq 1 100); do
  [[ $(dig_count svc-0099.service.consul A) == 3 && $(dig_count node-0099.node.consul A) == 1 ]] && break
  sleep 0.1
done
[[ $(dig_count svc-0099.service.consul SRV) == 3 ]] || { log "the agent does not answer the catalog"; exit 1; }
[[ $(dig_count h-0001.hit.example.test A) == 1 ]] || { log "the agent does not forward to the upstream"; exit 1; }
log "catalog loaded and answered; forwarding works"

# ---------------------------------------------------------------- 5. DNS runs
# the physical reference: the harness's trivial single-threaded UDP responder (tools/udpecho.rs:
# recv_from, flip QR, send_to) on the same CPU as the servers, driven by the same dnsperf
# settings; no DNS server can answer faster or with less CPU per query than this loop
ECHO_PID=""
if want ceiling; then
  TOOLS=${TOOLS:-/tmp/bench-tools}
  mkdir -p "$TOOLS"
  [[ -x $TOOLS/udpecho ]] || rustc -C opt-level=3 -o "$TOOLS/udpecho" "$(dirname "$ANCHOR")/tools/udpecho.rs"
  $PRE "$TOOLS/udpecho" serve "127.0.0.1:$ECHO_PORT" 3600 2>/dev/null &
  ECHO_PID=$!
  for i in $(seq 1 50); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$ECHO_PORT" x.service.consul A 2>/dev/null | grep -q 'status: NOERROR' && break
    sleep 0.1
  done
fi
for RUN in $(seq 1 "$REPS"); do
  if want consul; then
    [[ -n $ECHO_PID ]] && measure udpecho-ceiling consul "127.0.0.1:$ECHO_PORT" "$ECHO_PID"
    measure muster-consul consul "$DNS" "$AGENT_PID"
    measure bind-auth-consul consul "127.0.0.1:$AUTH_PORT" "$AUTH_PID"
  fi
  if want fwd-hit; then
    measure muster-fwd-hit fwd-hit "$DNS" "$AGENT_PID"
    measure unbound-fwd-hit fwd-hit "127.0.0.1:$UNB_PORT" "$UNB_PID"
  fi
done
if want latency; then
  HALF=${HALF:-$(python3 - "$RESULTS" <<'EOF'
import statistics, sys
q = [float(t.split("=")[1]) for l in open(sys.argv[1]) if l.startswith("RESULT name=muster-consul ")
     and " rate=max " in l and " clean=yes" in l for t in l.split() if t.startswith("qps=")]
print(int(statistics.median(q) / 2) if q else 50000)
EOF
)}
  log "fixed-rate runs at $HALF q/s (half of muster's median saturating qps)"
  for RUN in $(seq 1 "$REPS"); do
    # the same rate through the trivial echo responder: the latency floor of this box
    [[ -n $ECHO_PID ]] && measure udpecho-ceiling consul "127.0.0.1:$ECHO_PORT" "$ECHO_PID" "$HALF"
    measure muster-consul consul "$DNS" "$AGENT_PID" "$HALF"
    measure bind-auth-consul consul "127.0.0.1:$AUTH_PORT" "$AUTH_PID" "$HALF"
  done
fi

stop_pid "$ECHO_PID"; ECHO_PID=""

# ---------------------------------------------------------------- 6. memory
mem_line muster-dns-after-runs "$AGENT_PID" "300(catalog)" 0
stop_pid "$AGENT_PID"; AGENT_PID=""
if want memory; then
  rm -f "$WORK/listener.port"
  python3 "$HERE/checkload.py" serve "$WORK/listener.port" &
  LISTENER_PID=$!
  for i in $(seq 1 50); do [[ -s $WORK/listener.port ]] && break; sleep 0.1; done
  start_agent muster-checks
  MEM_PID=$STARTED_PID
  python3 "$HERE/checkload.py" load "$HTTP" 100 "$(cat "$WORK/listener.port")" "$CHECK_INTERVAL" >&2
  log "settling ${MEM_SETTLE}s with 100 services and 300 checks"
  sleep "$MEM_SETTLE"
  mem_line muster-checks "$MEM_PID" 100 300
  stop_pid "$MEM_PID"; MEM_PID=""
  stop_pid "$LISTENER_PID"; LISTENER_PID=""
fi

cleanup; ANCHORS_UP=0
trap - EXIT

# ---------------------------------------------------------------- 7. summary
echo
echo "command: MODE=$MODE REPS=$REPS DURATION=$DURATION bench/dns.sh   ($(date -u +%F), $(nproc) CPUs)"
python3 "$HERE/summary.py" "$RESULTS"
