#!/usr/bin/env bash
# Side-by-side benchmark: direct vs protoplex vs sslh-select vs sslh-fork vs haproxy (TCP
# mode), same backend, same load generator, one run, one machine (Linux: Debian packages, /proc).
#   bash bench/run.sh          full run (~5 min)
#   QUICK=1 bash bench/run.sh  smoke run (~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
D=${D:-5s}; RATE=${RATE:-2000}; LATD=${LATD:-10s}; BULK=${BULK:-2147483648}; CPUN=${CPUN:-100000}
IDLE_NS=${IDLE_NS:-"5000 9000"}
if [ "$QUICK" = 1 ]; then D=2s; RATE=1000; LATD=3s; BULK=268435456; CPUN=10000; IDLE_NS="1000"; fi

need=()
command -v sslh-select >/dev/null && command -v sslh >/dev/null || need+=(sslh)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
  rm -f /usr/sbin/policy-rc.d
fi
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

go build -o "$TMP/backend" ./bench/backend
go build -o "$TMP/loadgen" ./bench/loadgen
go build -o "$TMP/protoplex" ./cmd/protoplex

freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

HP=$(freeport); SP=$(freeport)
"$TMP/backend" -http 127.0.0.1:$HP -ssh 127.0.0.1:$SP > "$TMP/backend.log" 2>&1 & PIDS+=($!)
waitport "$HP"; waitport "$SP"

# protoplex
PP=$(freeport)
cat > "$TMP/protoplex.yaml" <<YAML
server:
  listen: "127.0.0.1:$PP"
  max_connections: 9500
  identify_timeout: "5s"
  log_level: "warn"
protocols:
  - name: HTTP
    target: "127.0.0.1:$HP"
  - name: SSH
    target: "127.0.0.1:$SP"
monitoring:
  metrics_port: 0
  health_check_port: 0
YAML
"$TMP/protoplex" -config "$TMP/protoplex.yaml" > "$TMP/protoplex.log" 2>&1 & PP_PID=$!; PIDS+=($PP_PID)

# sslh-select
SLP=$(freeport)
sslh-select -f -n -p 127.0.0.1:$SLP --http 127.0.0.1:$HP --ssh 127.0.0.1:$SP -t 5 > "$TMP/sslh.log" 2>&1 & SL_PID=$!; PIDS+=($SL_PID)

# sslh-fork (Debian's plain sslh: one process per connection; sslh-ev is not
# in Debian 12)
SFP=$(freeport)
sslh -f -n -p 127.0.0.1:$SFP --http 127.0.0.1:$HP --ssh 127.0.0.1:$SP -t 5 > "$TMP/sslh-fork.log" 2>&1 & SF_PID=$!; PIDS+=($SF_PID)

# haproxy, TCP mode, content inspection
HAP=$(freeport)
cat > "$TMP/haproxy.cfg" <<CFG
global
  maxconn 9500  # 2 fds per proxied connection under the 20,000 fd cap
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend mux
  bind 127.0.0.1:$HAP
  tcp-request inspect-delay 5s
  acl is_ssh req.payload(0,8) -m bin 5353482d322e302d
  tcp-request content accept if HTTP
  tcp-request content accept if is_ssh
  use_backend ssh if is_ssh
  default_backend http
backend http
  server a 127.0.0.1:$HP
backend ssh
  server b 127.0.0.1:$SP
CFG
haproxy -db -f "$TMP/haproxy.cfg" > "$TMP/haproxy.log" 2>&1 & HA_PID=$!; PIDS+=($HA_PID)
waitport "$PP"; waitport "$SLP"; waitport "$SFP"; waitport "$HAP"

LG="$TMP/loadgen"
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; }
declare -A R
# sslh-fork last in each phase, and the next phase waits for its children
# to exit: a process per connection lingers up to its -t timeout and would
# steal CPU from whoever runs next.
names=(direct protoplex sslh haproxy fork)
settle() { for _ in $(seq 1 100); do pgrep -P "$SF_PID" >/dev/null || return 0; sleep 0.1; done; }
declare -A ADDR=([direct]=127.0.0.1:$HP [protoplex]=127.0.0.1:$PP [sslh]=127.0.0.1:$SLP [fork]=127.0.0.1:$SFP [haproxy]=127.0.0.1:$HAP)
declare -A SSHADDR=([direct]=127.0.0.1:$SP [protoplex]=127.0.0.1:$PP [sslh]=127.0.0.1:$SLP [fork]=127.0.0.1:$SFP [haproxy]=127.0.0.1:$HAP)
declare -A PID=([direct]=0 [protoplex]=$PP_PID [sslh]=$SL_PID [fork]=$SF_PID [haproxy]=$HA_PID)

for c in 1 64 512; do
  for n in "${names[@]}"; do
    out=$("$LG" cps -addr "${ADDR[$n]}" -ssh-addr "${SSHADDR[$n]}" -c $c -d $D)
    echo "cps c=$c $n: $out" >&2
    R[cps$c,$n]=$(echo "$out" | kv cps)
  done
  settle
done
for n in "${names[@]}"; do
  out=$("$LG" latency -addr "${ADDR[$n]}" -rate $RATE -d $LATD); echo "latency $n: $out" >&2
  R[p50,$n]=$(echo "$out" | kv p50_us); R[p99,$n]=$(echo "$out" | kv p99_us); R[p999,$n]=$(echo "$out" | kv p999_us)
done
settle
for s in 1 16; do
  for n in "${names[@]}"; do
    out=$("$LG" bulk -addr "${ADDR[$n]}" -streams $s -bytes $((BULK / s))); echo "bulk s=$s $n: $out" >&2
    R[bulk$s,$n]=$(echo "$out" | kv gibps)
  done
  settle
done
# Not sslh-fork: its children are reaped automatically (SIGCHLD ignored), so
# their CPU time reaches no counter of the parent, and its parent's RSS says
# nothing about connections each held by its own process.
for n in protoplex sslh haproxy; do
  out=$("$LG" cpu -addr "${ADDR[$n]}" -n $CPUN -c 64 -pid "${PID[$n]}"); echo "cpu $n: $out" >&2
  R[cpu,$n]=$(echo "$out" | kv per_100k)
  for k in $IDLE_NS; do
    out=$("$LG" idle -addr "${ADDR[$n]}" -n $k -pid "${PID[$n]}"); echo "idle n=$k $n: $out" >&2
    R[idle$k,$n]=$(echo "$out" | kv kib_per_conn)
  done
done

ratio() { python3 -c "a,b='$1','$2'
try: print('%.2f' % (float(a)/float(b)))
except Exception: print('n/a')"; }
date=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p bench/results
out="bench/results/$date.md"
{
  echo "# protoplex benchmark, $date"
  echo
  echo "Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), fd limit $(ulimit -n)."
  echo "Versions: $(go version | cut -d' ' -f3), $(sslh-select -V 2>&1 | head -1), $(haproxy -v | head -1 | cut -d' ' -f1-3), protoplex $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
  echo "Routing job for all: HTTP → backend A, SSH banner → backend B on one port (10% SSH in cps/cpu). QUICK=$QUICK."
  echo
  echo "| figure | direct | protoplex | sslh-select | sslh-fork | haproxy | protoplex/sslh-select | protoplex/sslh-fork | protoplex/haproxy | protoplex/direct |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  row() { echo "| $1 | ${R[$2,direct]:-–} | ${R[$2,protoplex]:-–} | ${R[$2,sslh]:-–} | ${R[$2,fork]:-–} | ${R[$2,haproxy]:-–} | $(ratio "${R[$2,protoplex]:-}" "${R[$2,sslh]:-}") | $(ratio "${R[$2,protoplex]:-}" "${R[$2,fork]:-}") | $(ratio "${R[$2,protoplex]:-}" "${R[$2,haproxy]:-}") | $(ratio "${R[$2,protoplex]:-}" "${R[$2,direct]:-}") |"; }
  row "conn/s, c=1" cps1; row "conn/s, c=64" cps64; row "conn/s, c=512" cps512
  row "TTFB p50 µs @${RATE}/s" p50; row "TTFB p99 µs" p99; row "TTFB p99.9 µs" p999
  row "bulk GiB/s, 1 stream" bulk1; row "bulk GiB/s, 16 streams" bulk16
  row "CPU s per 100k conns" cpu
  for k in $IDLE_NS; do row "KiB per idle conn, $k held" idle$k; done
  echo
  echo "Latency is from the planned start of each connection (open loop) to the first reply byte, connect included;"
  echo "added latency = contender − direct. Idle connections are capped by the 20,000 fds per process of this machine"
  echo "(a proxied connection costs the proxy 2 fds), so 100,000 concurrent connections cannot be shown here."
} | tee "$out"
echo "written: $out" >&2
