#!/usr/bin/env bash
# bench/cluster.sh — failure detection and failover of a real muster cluster on loopback.
#
#   bench/cluster.sh                       build, then SUITES="failure leader", REPS=5 each
#   BUILD=0 REPS=10 SUITES=failure bench/cluster.sh
#
# The cluster: the Galera example (config-examples/galera/node1..3, servers with
# bootstrap_expect 3) plus two client agents (config-examples/client), each on its own
# address in $NET.0/24 (default 127.0.50: servers .11-.13, clients .20/.21) with Consul's
# default ports, gossip encrypted with the example key; only addresses, data dirs and the
# MySQL check (interval 2 s, against python listeners this script starts) are rewritten.
#
# Suites (issue 3 "Speed"):
#   failure  REPS x: kill -9 a non-leader server; the time until its address has left
#            galeradb.service.consul on EVERY other agent (each polled with dig); restart it
#            and wait until it is back everywhere. Target: median < 2.5 s.
#   leader   REPS x: kill -9 the leader; the time until a catalog write through a client
#            agent (PUT /v1/catalog/register, one try every 20 ms, 1 s timeout) gets a 200.
#            Restart it and wait until the cluster is whole again. Target: median < 1.5 s.
#   converge 45 more client agents (50 in all, on $NET2.0/24, default 127.0.51), started
#            together; the time from the last start until every agent's /v1/agent/members
#            shows 50 alive. Target: < 5 s.
#   idle     IDLE_SECS (default 600) with nothing happening: every second, every agent's
#            member list must show all 5 alive and its DNS must answer galeradb with the 3
#            servers; any miss, and any "member down"/"declared down" log line, counts as a
#            false failure. Target: 0.
#   catalog  catalog registrations vs etcd, in the same run from the same load script:
#            ../shared/bench/kv-anchor.sh load (a 3-member etcd on 127.0.0.1, while this
#            cluster idles), then MODE=catalog kv-anchor.sh run against the 3 servers' HTTP
#            APIs (seq-leader, seq-follower, conc-$CONCS spread over the 3). KV_DURATION s
#            per cell (default 10), KV_REPS runs (default 1). Target: >= 1.5x etcd per cell.
#            Needs etcd and httpload: ../shared/bench/kv-anchor.sh install.
#
# Bounds: every wait has a fixed deadline; on exit the script stops only the PIDs it started.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
NET=${NET:-127.0.50}
REPS=${REPS:-5}
SUITES=${SUITES:-failure leader}
BUILD=${BUILD:-1}
WORK=${WORK:-/tmp/muster-cluster-bench}
BIN=${BIN:-$ROOT/target/release/muster}
DEADLINE=${DEADLINE:-30}   # seconds, every wait
RESULTS=${RESULTS:-$WORK/results-$(date +%Y%m%d-%H%M%S).txt}

log() { echo "[cluster-bench] $*" >&2; }
now() { date +%s.%N; }

declare -A PID
LISTENERS=()
cleanup() {
  local p
  for p in "${PID[@]}" "${LISTENERS[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# dig polls every agent's DNS (Debian's bind9-dnsutils; the shared harness installs its own
# tools the same way).
if ! command -v dig >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9-dnsutils >&2
fi
if ((BUILD)); then (cd "$ROOT" && cargo build --release -p muster >&2); fi
[[ -x $BIN ]] || { echo "no binary at $BIN" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
: >"$RESULTS"

SERVERS=(db1 db2 db3)
CLIENTS=(monitor0 monitor1)
declare -A IP=([db1]=$NET.11 [db2]=$NET.12 [db3]=$NET.13 [monitor0]=$NET.20 [monitor1]=$NET.21)

# ---- configs: the examples, rewritten (python: JSON in, JSON out)
python3 - "$ROOT/config-examples" "$WORK" "$NET" <<'EOF'
import json, os, shutil, sys
src, work, net = sys.argv[1:4]
def fix(s): return s.replace("127.0.0.1", net + ".1").replace("127.0.0.2", net + ".2")
def conf(example, name, edit):
    d = os.path.join(work, name, "config"); os.makedirs(d)
    os.makedirs(os.path.join(work, name, "data"))
    for f in sorted(os.listdir(os.path.join(src, example))):
        p = os.path.join(src, example, f)
        if not f.endswith(".json"):
            shutil.copy(p, d); continue
        v = json.load(open(p)); edit(f, v)
        json.dump(v, open(os.path.join(d, f), "w"), indent=1)
for i in range(3):
    def edit(f, v, i=i):
        if f == "agent.json":
            for k in ("bind_addr", "client_addr"): v[k] = fix(v[k])
            v["start_join"] = [fix(a) for a in v["start_join"]]
            v["data_dir"] = os.path.join(work, "db%d" % (i + 1), "data")
            v["enable_syslog"] = False
        else:
            v["service"]["check"]["tcp"] = "%s.1%d:3306" % (net, i + 1)
            v["service"]["check"]["interval"] = "2s"
    conf("galera/node%d" % (i + 1), "db%d" % (i + 1), edit)
for i in range(2):
    def edit(f, v, i=i):
        if f == "agent.json":
            v["bind_addr"] = v["client_addr"] = "%s.2%d" % (net, i)
            v["retry_join"] = [fix(a) for a in v["retry_join"]]
            v["node_name"] = "monitor%d" % i
            v["data_dir"] = os.path.join(work, "monitor%d" % i, "data")
    conf("client", "monitor%d" % i, edit)
EOF

for n in "${SERVERS[@]}"; do
  python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 3306)); s.listen(64)
while True: s.accept()[0].close()' "${IP[$n]}" &
  LISTENERS+=($!)
done

start() { # node
  "$BIN" agent -config-dir="$WORK/$1/config" >"$WORK/$1/out" 2>>"$WORK/$1/log" &
  PID[$1]=$!
}
dns_ips() { # agent-node -> sorted A records of galeradb
  dig +short +time=1 +tries=1 @"${IP[$1]}" -p 8600 galeradb.service.consul A 2>/dev/null | sort | tr '\n' ' '
}
leader_ip() { curl -s -m 1 "http://${IP[monitor0]}:8500/v1/status/leader" | tr -d '"' | cut -d: -f1; }
ALL="$NET.11 $NET.12 $NET.13 "
wait_all() { # what agents... ; until every listed agent answers exactly $WANT
  local what=$1; shift
  local end=$(( $(date +%s) + DEADLINE )) a ok
  while (( $(date +%s) < end )); do
    ok=1
    for a in "$@"; do [[ $(dns_ips "$a") == "$WANT" ]] || { ok=0; break; }; done
    ((ok)) && return 0
    sleep 0.02
  done
  log "timed out: $what"
  # Keep the evidence outside $WORK (the next run removes it): every agent's answer and log.
  local keep=/tmp/muster-cluster-bench-timeout-$(date +%Y%m%d-%H%M%S) n
  mkdir -p "$keep"
  for n in "${!IP[@]}"; do
    echo "$n answers: $(dns_ips "$n")" >>"$keep/answers.txt"
    cp "$WORK/$n/log" "$keep/$n.log" 2>/dev/null || true
  done
  log "answers and agent logs kept in $keep"
  return 1
}
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print("%.3f" % statistics.median(v) if v else "nan")' "$@"; }

for n in "${SERVERS[@]}" "${CLIENTS[@]}"; do start "$n"; done
WANT=$ALL
wait_all "the cluster to answer on every agent" "${SERVERS[@]}" "${CLIENTS[@]}"
log "cluster up: every agent answers galeradb with $ALL"
{
  echo "# muster cluster bench $(date -u +%FT%TZ) reps=$REPS $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo +dirty)"
} | tee -a "$RESULTS" >&2

FAIL_TIMES=()
if [[ " $SUITES " == *" failure "* ]]; then
  for r in $(seq 1 "$REPS"); do
    lead=$(leader_ip)
    # the followers, in order; odd runs kill the first, even runs the last
    followers=()
    for n in "${SERVERS[@]}"; do
      if [[ ${IP[$n]} != "$lead" ]]; then followers+=("$n"); fi
    done
    if (( r % 2 )); then victim=${followers[0]}; else victim=${followers[-1]}; fi
    others=()
    for n in "${SERVERS[@]}" "${CLIENTS[@]}"; do
      if [[ $n != "$victim" ]]; then others+=("$n"); fi
    done
    t0=$(now); kill -KILL "${PID[$victim]}"; wait "${PID[$victim]}" 2>/dev/null || true
    WANT=$(echo $ALL | tr ' ' '\n' | grep -vx "${IP[$victim]}" | sort | tr '\n' ' ')
    wait_all "$victim out of DNS" "${others[@]}"
    t=$(python3 -c "print('%.3f' % ($(now) - $t0))")
    FAIL_TIMES+=("$t")
    echo "RESULT suite=failure run=$r victim=$victim seconds=$t" | tee -a "$RESULTS" >&2
    start "$victim"; WANT=$ALL
    wait_all "$victim back" "${SERVERS[@]}" "${CLIENTS[@]}"
    sleep 2   # let the restarted node settle into gossip before the next kill
  done
fi

LEAD_TIMES=()
if [[ " $SUITES " == *" leader "* ]]; then
  for r in $(seq 1 "$REPS"); do
    lead=$(leader_ip); victim=""
    for n in "${SERVERS[@]}"; do
      if [[ ${IP[$n]} == "$lead" ]]; then victim=$n; fi
    done
    [[ -n $victim ]] || { log "no leader"; exit 1; }
    t0=$(now); kill -KILL "${PID[$victim]}"; wait "${PID[$victim]}" 2>/dev/null || true
    end=$(( $(date +%s) + DEADLINE )); code=0
    while (( $(date +%s) < end )); do
      code=$(curl -s -o /dev/null -w '%{http_code}' -m 1 -X PUT \
        -d "{\"Node\":\"bench-$r\",\"Address\":\"192.0.2.9\"}" \
        "http://${IP[monitor0]}:8500/v1/catalog/register" || true)
      [[ $code == 200 ]] && break
      sleep 0.02
    done
    [[ $code == 200 ]] || { log "no write within ${DEADLINE}s"; exit 1; }
    t=$(python3 -c "print('%.3f' % ($(now) - $t0))")
    LEAD_TIMES+=("$t")
    echo "RESULT suite=leader run=$r victim=$victim seconds=$t" | tee -a "$RESULTS" >&2
    start "$victim"; WANT=$ALL
    wait_all "$victim back" "${SERVERS[@]}" "${CLIENTS[@]}"
    sleep 2
  done
fi

IDLE=""
if [[ " $SUITES " == *" idle "* ]]; then
  IDLE_SECS=${IDLE_SECS:-600}
  members_alive() { curl -s -m 1 "http://${IP[$1]}:8500/v1/agent/members" 2>/dev/null | grep -o '"Status":1' | wc -l; }
  marks=()
  for n in "${SERVERS[@]}" "${CLIENTS[@]}"; do marks+=("$(wc -l <"$WORK/$n/log")"); done
  misses=0; checks=0; WANT=$ALL
  end=$(( $(date +%s) + IDLE_SECS ))
  while (( $(date +%s) < end )); do
    for n in "${SERVERS[@]}" "${CLIENTS[@]}"; do
      checks=$((checks + 1))
      m=$(members_alive "$n"); d=$(dns_ips "$n")
      if [[ $m != 5 || $d != "$WANT" ]]; then
        misses=$((misses + 1)); log "idle miss on $n: members alive=$m dns=[$d]"
      fi
    done
    sleep 1
  done
  downs=0; i=0
  for n in "${SERVERS[@]}" "${CLIENTS[@]}"; do
    c=$(tail -n +"$(( ${marks[$i]} + 1 ))" "$WORK/$n/log" | grep -c "member down\|declared down" || true)
    downs=$((downs + c)); i=$((i + 1))
  done
  IDLE="$((misses + downs))"
  echo "RESULT suite=idle seconds=$IDLE_SECS polls=$checks misses=$misses down_lines=$downs" | tee -a "$RESULTS" >&2
fi

KV_LINES=""
if [[ " $SUITES " == *" catalog "* ]]; then
  KV=${KV:-$ROOT/../shared/bench/kv-anchor.sh}
  [[ -x $KV ]] || { log "no kv-anchor.sh at $KV"; exit 1; }
  # etcd 3.4 and fio from Debian, as the shared harness installs them.
  command -v etcd >/dev/null || "$KV" install >&2 || { log "cannot install etcd ($KV install)"; exit 1; }
  KV_RESULTS=$WORK/kv-results.txt; : >"$KV_RESULTS"
  # etcd first (its own members on 127.0.0.1:2379x), while this cluster idles
  DURATION=${KV_DURATION:-10} REPS=${KV_REPS:-1} CONCS=${CONCS:-8 32 128} MODES=unpinned \
    WORK=$WORK/etcd RESULTS=$KV_RESULTS "$KV" load >&2
  lead=$(leader_ip); follower=""
  for n in "${SERVERS[@]}"; do [[ ${IP[$n]} == "$lead" || -n $follower ]] || follower=${IP[$n]}; done
  DURATION=${KV_DURATION:-10} REPS=${KV_REPS:-1} CONCS=${CONCS:-8 32 128} MODE=catalog \
    TARGET="$NET.11:8500,$NET.12:8500,$NET.13:8500" LEADER="$lead:8500" FOLLOWER="$follower:8500" \
    WORK=$WORK/sut RESULTS=$KV_RESULTS "$KV" run muster >&2
  cat "$KV_RESULTS" >>"$RESULTS"
  KV_LINES=$(python3 - "$KV_RESULTS" <<'EOF'
import statistics, sys
cells = {}
for line in open(sys.argv[1]):
    if not line.startswith("RESULT"): continue
    kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    who = "muster" if kv.get("mode") == "catalog" else "etcd"
    cells.setdefault(kv["name"], {}).setdefault(who, []).append(float(kv["rps"]))
conc = sorted((n for n in cells if n.startswith("conc-")), key=lambda n: int(n[5:]))
for name in ["seq-leader", "seq-follower"] + conc:
    c = cells.get(name, {})
    if "etcd" not in c or "muster" not in c: continue
    e, m = statistics.median(c["etcd"]), statistics.median(c["muster"])
    ratio = m / e if e else float("nan")
    print("| catalog registrations/s, %s (etcd puts/s) | %.0f (%.0f) | %.2fx | >= 1.5x | %s |"
          % (name, m, e, ratio, "yes" if ratio >= 1.5 else "**NO**"))
EOF
)
fi

CONVERGE=""
if [[ " $SUITES " == *" converge "* ]]; then
  # 45 more client agents on $NET2.x (50 agents in all), each joining the servers
  NET2=${NET2:-127.0.51}
  python3 - "$WORK" "$NET2" <<'EOF'
import json, os, shutil, sys
work, net2 = sys.argv[1:3]
base = os.path.join(work, "monitor0", "config")
for i in range(45):
    name = "c%02d" % i
    d = os.path.join(work, name, "config"); os.makedirs(d); os.makedirs(os.path.join(work, name, "data"))
    for f in os.listdir(base):
        if not f.endswith(".json"):
            shutil.copy(os.path.join(base, f), d); continue
        v = json.load(open(os.path.join(base, f)))
        v["bind_addr"] = v["client_addr"] = "%s.%d" % (net2, 10 + i)
        v["node_name"] = name
        v["data_dir"] = os.path.join(work, name, "data")
        json.dump(v, open(os.path.join(d, f), "w"))
EOF
  for i in $(seq 0 44); do n=$(printf 'c%02d' "$i"); IP[$n]=$NET2.$((10 + i)); start "$n"; done
  t0=$(now)
  alive() { curl -s -m 1 "http://${IP[$1]}:8500/v1/agent/members" 2>/dev/null | grep -o '"Status":1' | wc -l; }
  end=$(( $(date +%s) + 60 )); done_=0
  while (( $(date +%s) < end )); do
    ok=1
    for n in "${!IP[@]}"; do [[ $(alive "$n") == 50 ]] || { ok=0; break; }; done
    ((ok)) && { done_=1; break; }
    sleep 0.05
  done
  ((done_)) || { log "50 agents did not converge within 60 s"; exit 1; }
  CONVERGE=$(python3 -c "print('%.3f' % ($(now) - $t0))")
  echo "RESULT suite=converge agents=50 seconds=$CONVERGE" | tee -a "$RESULTS" >&2
fi

echo
echo "command: REPS=$REPS SUITES=\"$SUITES\" bench/cluster.sh   ($(date -u +%F), $(nproc) CPUs, results in $RESULTS)"
echo "| measurement | runs (s) | median (s) | target | met |"
echo "|---|---|---|---|---|"
if ((${#FAIL_TIMES[@]})); then
  m=$(median "${FAIL_TIMES[@]}")
  echo "| kill -9 of a server → out of DNS on every other agent | ${FAIL_TIMES[*]} | $m | < 2.5 | $(python3 -c "print('yes' if $m < 2.5 else '**NO**')") |"
fi
if ((${#LEAD_TIMES[@]})); then
  m=$(median "${LEAD_TIMES[@]}")
  echo "| kill -9 of the leader → first acknowledged write via a client | ${LEAD_TIMES[*]} | $m | < 1.5 | $(python3 -c "print('yes' if $m < 1.5 else '**NO**')") |"
fi
if [[ -n $IDLE ]]; then
  echo "| false failures during ${IDLE_SECS} s idle (5 agents) | $IDLE | $IDLE | 0 | $([[ $IDLE == 0 ]] && echo yes || echo '**NO**') |"
fi
if [[ -n $KV_LINES ]]; then
  echo "$KV_LINES"
fi
if [[ -n $CONVERGE ]]; then
  echo "| 50 agents all see 50 alive, from the last start | $CONVERGE | $CONVERGE | < 5 | $(python3 -c "print('yes' if $CONVERGE < 5 else '**NO**')") |"
fi
