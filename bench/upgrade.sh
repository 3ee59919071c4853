#!/usr/bin/env bash
# Upgrade under load: protoplex (SIGUSR2: a new process of the binary takes
# the listening sockets, then the old one drains) against HAProxy's seamless
# reload (-x: the new process takes the listeners from the old one's stats
# socket, "expose-fd listeners"; -sf: the old one finishes). The same open
# loop (loadgen latency: RATE new connections per second, an HTTP request
# each) runs through each for D seconds while the proxy switches N times;
# every connection refused, reset or unanswered is an error. HOLD
# connections are established (an HTTP request each, left open) before the
# switches: protoplex moves them to each new process, HAProxy keeps them in
# its old processes; a second after the last switch the script counts the
# old processes still running and the connections they hold, and at the
# end how many held connections still answer end to end. Each run says
# whether the generator held RATE (loadgen's started_per_s, behind_max_ms),
# and protoplex's old processes how long each ran on after the new one was
# ready (after_new_ready).
#   bash bench/upgrade.sh              (RATE=2000 D=12 N=3 HOLD=200)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-2000}; D=${D:-12}; N=${N:-3}; HOLD=${HOLD:-200}
MAXCONN=${MAXCONN:-9950} # both proxies' cap (protoplex's max_connections, haproxy's maxconn)
command -v haproxy >/dev/null || { echo "haproxy is needed (apt-get install haproxy)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$TMP/ha.pid" ] && kill $(cat "$TMP/ha.pid") 2>/dev/null || true
  pkill -KILL -g "${PGID:-0}" protoplex 2>/dev/null || true
  wait 2>/dev/null || true; rm -rf "$TMP"
}
trap cleanup EXIT
go build -o "$TMP/backend" ./bench/backend
go build -o "$TMP/loadgen" ./bench/loadgen
go build -o "$TMP/protoplex" ./cmd/protoplex
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

HP=$(freeport); SP=$(freeport); PP=$(freeport); AP=$(freeport)
"$TMP/backend" -http 127.0.0.1:$HP -ssh 127.0.0.1:$SP > "$TMP/backend.log" 2>&1 & PIDS+=($!)
cat > "$TMP/pp.yaml" <<YAML
server:
  listen: "127.0.0.1:$PP"
  max_connections: $MAXCONN
  log_level: "info"
protocols:
  - name: HTTP
    target: "127.0.0.1:$HP"
monitoring:
  metrics_port: 0
  health_check_port: 0
YAML
cat > "$TMP/ha.cfg" <<CFG
global
  maxconn $MAXCONN
  nbthread 2
  stats socket $TMP/ha.sock mode 600 level admin expose-fd listeners
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend mux
  bind 127.0.0.1:$AP
  tcp-request inspect-delay 5s
  tcp-request content accept if HTTP
  default_backend http
backend http
  server a 127.0.0.1:$HP
CFG
setsid "$TMP/protoplex" -config "$TMP/pp.yaml" > "$TMP/pp.out" 2> "$TMP/pp.log" & PPID0=$!; PIDS+=($PPID0)
PGID=$PPID0
haproxy -D -p "$TMP/ha.pid" -f "$TMP/ha.cfg"
waitport $HP; waitport $PP; waitport $AP

# switch NAME: one upgrade of NAME; prints how long the command took to hand over (protoplex: from its log).
pp_pid=$PPID0
switch_protoplex() {
  local n; n=$(grep -c "upgrade: the new process serves" "$TMP/pp.log" || true)
  kill -USR2 "$pp_pid"
  for _ in $(seq 1 200); do [ "$(grep -c "upgrade: the new process serves" "$TMP/pp.log" || true)" -gt "$n" ] && break; sleep 0.05; done
  pp_pid=$(grep "upgrade: the new process serves" "$TMP/pp.log" | tail -1 | sed -E 's/.*pid=([0-9]+).*/\1/')
}
switch_haproxy() {
  haproxy -D -p "$TMP/ha.pid.new" -f "$TMP/ha.cfg" -x "$TMP/ha.sock" -sf $(cat "$TMP/ha.pid")
  mv "$TMP/ha.pid.new" "$TMP/ha.pid"
}
current_protoplex() { echo "$pp_pid"; }
current_haproxy() { cat "$TMP/ha.pid"; }
cfg_protoplex() { echo "$TMP/pp.yaml"; }
cfg_haproxy() { echo "$TMP/ha.cfg"; }
# old_holders NAME: the processes of NAME other than the current one, and
# the established connections they hold (each proxied connection is two
# sockets: client and backend).
old_holders() {
  local cur; cur=$("current_$1"); local olds=0 socks=0
  for p in $(pgrep -f "$("cfg_$1")"); do
    [ "$p" = "$cur" ] && continue
    olds=$((olds+1))
    socks=$((socks + $(ss -Htnp state established 2>/dev/null | grep -c "pid=$p," || true)))
  done
  echo "old_processes=$olds old_held_connections=$((socks/2))"
}
run() { # run NAME PORT SWITCHES: the load, SWITCHES switches spread over it
  local name=$1 port=$2 n=$3 hold=0
  [ "$n" -gt 0 ] && hold=$HOLD
  "$TMP/loadgen" latency -addr 127.0.0.1:$port -rate "$RATE" -d "${D}s" -hold "$hold" > "$TMP/$name.lg" &
  local lg=$!
  local gap; gap=$(python3 -c "print($D/($n+1))")
  for _ in $(seq 1 "$n"); do sleep "$gap"; "switch_$name"; done
  local olds=""
  if [ "$n" -gt 0 ]; then sleep 1; olds=" $(old_holders "$name") (1 s after the last switch)"; fi
  wait $lg
  echo "$name, $n switches: $(cat "$TMP/$name.lg")$olds"
  # Did the generator hold RATE? Every start within 20 ms of its plan (about
  # 40 connections at 2,000/s): otherwise the figures are of a lower load.
  local behind; behind=$(sed -E 's/.*behind_max_ms=([0-9.]+).*/\1/' "$TMP/$name.lg")
  if python3 -c "import sys; sys.exit(0 if $behind <= 20 else 1)"; then
    echo "  the load held ${RATE}/s: no start more than ${behind} ms behind its plan"
  else
    echo "  WARNING: the load fell ${behind} ms behind its plan: it did not hold ${RATE}/s throughout (a busy machine); run again"
  fi
}
echo "load: ${RATE} new connections/s for ${D}s, ${N} switches; $(nproc) CPUs; $(haproxy -v | head -1 | cut -d' ' -f1-3); protoplex $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
# Each contender without a switch first (the baseline of the same run), then
# with N.
run protoplex $PP 0
run haproxy $AP 0
run protoplex $PP "$N"
grep "upgrade: the new process serves" "$TMP/pp.log" | sed -E 's/.*(moved=[0-9]+) (left_to_drain=[0-9]+) (took=[0-9.]+m?s).*/protoplex switch: \1 \2 \3 (SIGUSR2 to the last connection acknowledged)/'
# Each old process's last line: how long it ran on after the new one was
# ready (acknowledged the listeners), its moves and drain included.
grep "upgrade: this process drained and exits" "$TMP/pp.log" | sed -E 's/.*drained=([0-9]+) after_new_ready=([0-9.]+[mµu]?s).*/protoplex old process: drained \1, gone \2 after the new one was ready/'
run haproxy $AP "$N"
echo "protoplex refusals logged (max_connections): $(grep -c 'max_connections reached' "$TMP/pp.log" || true)"
