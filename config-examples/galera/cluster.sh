#!/usr/bin/env bash
# config-examples/galera/cluster.sh — run the three-node Galera scenario on this machine.
#
#   config-examples/galera/cluster.sh start [--client]   start db1..db3 (and the monitor client)
#   config-examples/galera/cluster.sh status             who runs, the members, the leader, DNS
#   config-examples/galera/cluster.sh stop               SIGTERM each agent this script started
#
# Each node runs `muster agent -config-dir=config-examples/galera/nodeN` on its own loopback
# address (127.0.0.11-13; the client on 127.0.0.20) with Consul's default ports, exactly as the
# files say: `bootstrap_expect: 3`, the example gossip key, `start_join` to the three. Linux
# routes all of 127.0.0.0/8 to loopback, so nothing needs setting up. Data lives in
# /tmp/muster-galera/<node> (from the files); logs and PIDs in $RUN (default
# /tmp/muster-galera/run). The script stops only the PIDs it recorded.
#
# MySQL itself is not started: each node's check probes 127.0.0.1N:3306. To stand in for it:
#   python3 -m http.server 3306 --bind 127.0.0.11 &
# Then: dig @127.0.0.11 -p 8600 galeradb.service.consul
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN=${RUN:-/tmp/muster-galera/run}
BIN=${BIN:-}

binary() {
  if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release -p muster >&2)
    BIN=$ROOT/target/release/muster
  fi
  [[ -x $BIN ]] || { echo "no muster binary at $BIN" >&2; exit 1; }
}

start_one() { # name config-dir
  local name=$1 dir=$2 pidf=$RUN/$1.pid
  if [[ -s $pidf ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    echo "$name already runs (pid $(cat "$pidf"))"
    return
  fi
  MUSTER_SYSLOG_SOCKET=${MUSTER_SYSLOG_SOCKET:-$RUN/syslog.sock} \
    "$BIN" agent -config-dir="$dir" >"$RUN/$name.out" 2>"$RUN/$name.log" &
  echo $! >"$pidf"
  echo "$name started: pid $!, log $RUN/$name.log"
}

wait_ready() { # name
  local i
  for i in $(seq 1 100); do
    grep -q '^==> muster ready:' "$RUN/$1.out" 2>/dev/null && return 0
    kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null || { echo "$1 exited:"; tail -20 "$RUN/$1.log"; return 1; }
    sleep 0.1
  done
  echo "$1 not ready after 10 s"; return 1
}

case ${1:-} in
  start)
    mkdir -p "$RUN"
    binary
    for n in 1 2 3; do start_one "db$n" "$HERE/node$n"; done
    for n in 1 2 3; do wait_ready "db$n"; done
    if [[ ${2:-} == --client ]]; then
      start_one monitor "$HERE/../client"
      wait_ready monitor
    fi
    echo "waiting for a leader..."
    for i in $(seq 1 100); do
      leader=$(curl -s -m 1 http://127.0.0.11:8500/v1/status/leader || true)
      [[ $leader == *:* ]] && { echo "leader: $leader"; exit 0; }
      sleep 0.2
    done
    echo "no leader after 20 s; see $RUN/db*.log"; exit 1
    ;;
  status)
    for f in "$RUN"/*.pid; do
      [[ -e $f ]] || continue
      n=$(basename "$f" .pid)
      if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$n: running (pid $(cat "$f"))"; else echo "$n: stopped"; fi
    done
    curl -s -m 2 http://127.0.0.11:8500/v1/status/leader && echo
    "${BIN:-$ROOT/target/release/muster}" members -http-addr=127.0.0.11:8500 || true
    dig +short @127.0.0.11 -p 8600 galeradb.service.consul || true
    ;;
  stop)
    for f in "$RUN"/*.pid; do
      [[ -e $f ]] || continue
      pid=$(cat "$f")
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "$(basename "$f" .pid): stopped"
      fi
      rm -f "$f"
    done
    ;;
  *)
    sed -n '2,8p' "$0"; exit 2 ;;
esac
