#!/usr/bin/env bash
# Side-by-side benchmark: direct vs protoplex (data_plane: events) vs protoplex
# (data_plane: goroutines) vs sslh-select vs sslh-fork vs haproxy (TCP mode),
# same backend, same load generator, one run, one machine (Linux: Debian
# packages, /proc). Then wrk through each to an nginx backend, latency with
# HOLD connections held open, and the targets of the event-driven data plane.
#   bash bench/run.sh          full run (~8 min)
#   QUICK=1 bash bench/run.sh  smoke run (~2 min)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
D=${D:-5s}; RATE=${RATE:-2000}; LATD=${LATD:-10s}; BULK=${BULK:-2147483648}; CPUN=${CPUN:-50000}
IDLE_NS=${IDLE_NS:-"5000 9000"}
# 9,900 forwarded connections are 19,800 of the proxy's 20,000 fds: the
# cap of this machine, with room for the latency probes.
HOLD=${HOLD:-9900}
if [ "$QUICK" = 1 ]; then D=1s; RATE=1000; LATD=2s; BULK=268435456; CPUN=10000; IDLE_NS="1000"; fi

# Two runs at once on a few cores make both worthless: refuse to start beside
# another run of this script (a process running it that is neither this
# shell, one of its subshells, nor one of its ancestors) or a haproxy.
others=$(ps -eo pid=,ppid=,args= | awk -v me=$$ '
  { parent[$1] = $2; if ($0 ~ /bench\/run\.sh/ && $0 !~ /awk/) run[$1] = 1 }
  END {
    for (p = me; p > 1; p = parent[p]) mine[p] = 1
    for (p in run) {
      for (q = p; q > 1 && !(q in mine); q = parent[q]) {}
      if (q != me && !(p in mine)) print p
    }
  }'
  pgrep -x haproxy || true)
if [ -n "$others" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "another benchmark or haproxy is running (pids: $(echo $others)); FORCE=1 runs anyway" >&2; exit 1
fi

need=()
command -v sslh-select >/dev/null && command -v sslh >/dev/null || need+=(sslh)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
source bench/lib.sh
install_packages "${need[@]}"
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

declare -A PID=([direct]=0)
# start NAME CMD...: runs CMD in the background, its output in $TMP/NAME.log.
start() { local name=$1; shift; "$@" > "$TMP/$name.log" 2>&1 & PID[$name]=$!; PIDS+=($!); }
stop() { for n in "$@"; do kill "${PID[$n]}" 2>/dev/null || true; wait "${PID[$n]}" 2>/dev/null || true; done; }

# ppconf FILE PORT HTTP-TARGET SSH-TARGET [DATA-PLANE]
ppconf() {
  local plane=""
  [ -n "${5:-}" ] && plane="  data_plane: \"$5\""
  cat > "$1" <<YAML
server:
  listen: "127.0.0.1:$2"
  max_connections: 9950
  identify_timeout: "5s"
  log_level: "warn"
$plane
protocols:
  - name: HTTP
    target: "$3"
  - name: SSH
    target: "$4"
monitoring:
  metrics_port: 0
  health_check_port: 0
YAML
}

# haconf FILE PORT HTTP-TARGET SSH-TARGET: TCP mode, content inspection.
# The held connections stay idle under the 30 s client and server timeouts:
# opening them and the latency run take less.
haconf() {
  cat > "$1" <<CFG
global
  maxconn 9950  # 2 fds per proxied connection under the 20,000 fd cap
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend mux
  bind 127.0.0.1:$2
  tcp-request inspect-delay 5s
  acl is_ssh req.payload(0,8) -m bin 5353482d322e302d
  tcp-request content accept if HTTP
  tcp-request content accept if is_ssh
  use_backend ssh if is_ssh
  default_backend http
backend http
  server a $3
backend ssh
  server b $4
CFG
}

# The second protoplex runs the goroutine-per-connection path of the same
# binary, so before and after come from one run. A binary that does not know
# server.data_plane runs both instances without the key, labelled so.
plane_ok() { ppconf "$TMP/check.yaml" 1 127.0.0.1:1 127.0.0.1:1 "$1"; "$TMP/protoplex" -check -config "$TMP/check.yaml" >/dev/null 2>&1; }
plane_ok "" || { "$TMP/protoplex" -check -config "$TMP/check.yaml"; exit 1; }
if plane_ok events && plane_ok goroutines; then
  EV=events; GO=goroutines; GOLABEL=goroutines
  PLANES="protoplex runs \`data_plane: events\`, goroutines the same binary with \`data_plane: goroutines\`."
else
  EV=""; GO=""; GOLABEL="protoplex #2"
  PLANES="This binary rejects \`server.data_plane\`: protoplex #2 is a second instance of its one path, without the key."
fi

HP=$(freeport); SP=$(freeport)
start backend "$TMP/backend" -http 127.0.0.1:$HP -ssh 127.0.0.1:$SP
waitport "$HP"; waitport "$SP"

# startall SUFFIX HTTP-TARGET: protoplex, goroutines, sslh-select (and, for
# the main set, sslh-fork) and haproxy routing HTTP to HTTP-TARGET and SSH to
# the backend; their addresses in ADDR[name$SUFFIX].
declare -A ADDR
startall() {
  local s=$1 http=$2 p
  p=$(freeport); ADDR[protoplex$s]=127.0.0.1:$p
  ppconf "$TMP/protoplex$s.yaml" "$p" "$http" 127.0.0.1:$SP "$EV"
  start protoplex$s "$TMP/protoplex" -config "$TMP/protoplex$s.yaml"
  p=$(freeport); ADDR[goroutines$s]=127.0.0.1:$p
  ppconf "$TMP/goroutines$s.yaml" "$p" "$http" 127.0.0.1:$SP "$GO"
  start goroutines$s "$TMP/protoplex" -config "$TMP/goroutines$s.yaml"
  p=$(freeport); ADDR[sslh$s]=127.0.0.1:$p
  start sslh$s sslh-select -f -n -p 127.0.0.1:$p --http "$http" --ssh 127.0.0.1:$SP -t 5
  if [ -z "$s" ]; then
    # sslh-fork: Debian's plain sslh, one process per connection (sslh-ev
    # is not in Debian 12).
    p=$(freeport); ADDR[fork]=127.0.0.1:$p
    start fork sslh -f -n -p 127.0.0.1:$p --http "$http" --ssh 127.0.0.1:$SP -t 5
  fi
  p=$(freeport); ADDR[haproxy$s]=127.0.0.1:$p
  haconf "$TMP/haproxy$s.cfg" "$p" "$http" 127.0.0.1:$SP
  start haproxy$s haproxy -db -f "$TMP/haproxy$s.cfg"
  for n in protoplex goroutines sslh haproxy; do waitport "${ADDR[$n$s]##*:}"; done
  if [ -z "$s" ]; then waitport "${ADDR[fork]##*:}"; fi
}
startall "" 127.0.0.1:$HP
ADDR[direct]=127.0.0.1:$HP
declare -A SSHADDR=([direct]=127.0.0.1:$SP)
for n in protoplex goroutines sslh haproxy fork; do SSHADDR[$n]=${ADDR[$n]}; done

LG="$TMP/loadgen"
phase() { echo "== $1 (${SECONDS}s)" >&2; }
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; }
declare -A R
# sslh-fork last in each phase, and the next phase waits for its children
# to exit: a process per connection lingers up to its -t timeout and would
# steal CPU from whoever runs next.
names=(direct protoplex goroutines sslh haproxy fork)
# sslh-fork keeps one child per listening address; each of those forks the
# process per connection.
forkbusy() { local c; for c in $(pgrep -P "${PID[fork]}"); do pgrep -P "$c" >/dev/null && return 0; done; return 1; }
settle() {
  local t=$SECONDS
  for _ in $(seq 1 100); do
    forkbusy || break
    sleep 0.1
  done
  [ $((SECONDS - t)) -lt 2 ] || echo "   (waited $((SECONDS - t))s for sslh-fork's children)" >&2
}

phase cps
for c in 1 64 512; do
  for n in "${names[@]}"; do
    out=$("$LG" cps -addr "${ADDR[$n]}" -ssh-addr "${SSHADDR[$n]}" -c $c -d $D)
    echo "cps c=$c $n: $out" >&2
    R[cps$c,$n]=$(echo "$out" | kv cps)
  done
  settle
done
phase latency
for n in "${names[@]}"; do
  out=$("$LG" latency -addr "${ADDR[$n]}" -rate $RATE -d $LATD); echo "latency $n: $out" >&2
  R[p50,$n]=$(echo "$out" | kv p50_us); R[p99,$n]=$(echo "$out" | kv p99_us); R[p999,$n]=$(echo "$out" | kv p999_us)
done
settle
phase bulk
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
phase cpu-idle
for n in protoplex goroutines sslh haproxy; do
  out=$("$LG" cpu -addr "${ADDR[$n]}" -n $CPUN -c 64 -pid "${PID[$n]}"); echo "cpu $n: $out" >&2
  R[cpu,$n]=$(echo "$out" | kv per_100k)
  for k in $IDLE_NS; do
    out=$("$LG" idle -addr "${ADDR[$n]}" -n $k -pid "${PID[$n]}"); echo "idle n=$k $n: $out" >&2
    R[idle$k,$n]=$(echo "$out" | kv kib_per_conn)
  done
done

# Latency with HOLD forwarded connections held idle meanwhile, through those
# that can hold them (sslh-select's select() stops at 1,024 fds), against
# the same figure without them above.
phase held
for n in protoplex goroutines haproxy; do
  out=$("$LG" latency -addr "${ADDR[$n]}" -rate $RATE -d $LATD -hold $HOLD); echo "latency hold=$HOLD $n: $out" >&2
  R[herr,$n]=$(echo "$out" | kv errors)
  held=$(echo "$out" | kv held)
  if [ "$held" = "$HOLD" ]; then
    R[hp50,$n]=$(echo "$out" | kv p50_us); R[hp99,$n]=$(echo "$out" | kv p99_us)
  else
    R[hp50,$n]="failed ($held held)"; R[hp99,$n]="failed ($held held)"
    grep -v '^$' "$TMP/$n.log" | tail -n 2 | sed "s/^/  $n log: /" >&2
  fi
done
ratio() { python3 -c "a,b='$1','$2'
try: print('%.2f' % (float(a)/float(b)))
except Exception: print('n/a')"; }
for n in protoplex goroutines haproxy; do R[flat,$n]=$(ratio "${R[hp99,$n]}" "${R[p99,$n]}"); done
settle

# wrk to nginx, as the issue's table: a small static file, Connection: close,
# so every request is a new connection through the contender.
phase wrk
stop protoplex goroutines sslh haproxy fork
mkdir -p "$TMP/nginx/www"
head -c 512 /dev/zero | tr '\0' x > "$TMP/nginx/www/index.html"
NP=$(freeport)
cat > "$TMP/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$NP; root $TMP/nginx/www; }
}
CONF
start nginx nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
waitport "$NP"
startall -w 127.0.0.1:$NP
ADDR[direct-w]=127.0.0.1:$NP
wrkrps() { # ADDR CONNS THREADS
  local out
  out=$(wrk -t"$3" -c"$2" -d"$D" -H 'Connection: close' "http://$1/index.html" 2>&1) || true
  echo "$out" | grep -E 'Requests/sec|errors|Non-2xx' | tr -s ' ' | paste -sd' ' >&2
  echo "$out" | awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }'
}
for c in 1 64; do
  for n in direct protoplex goroutines sslh haproxy; do
    echo -n "wrk c=$c $n: " >&2
    R[wrk$c,$n]=$(wrkrps "${ADDR[$n-w]}" $c $([ $c = 1 ] && echo 1 || echo 2))
  done
done

phase done
date=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p bench/results
out="bench/results/$date.md"
{
  echo "# protoplex benchmark, $date"
  echo
  echo "Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), fd limit $(ulimit -n)."
  echo "Versions: $(go version | cut -d' ' -f3), $(sslh-select -V 2>&1 | head -1), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), protoplex $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
  echo "Routing job for all: HTTP → backend A, SSH banner → backend B on one port (10% SSH in cps/cpu). QUICK=$QUICK."
  echo "$PLANES"
  echo
  echo "| figure | direct | protoplex | $GOLABEL | sslh-select | sslh-fork | haproxy | protoplex/$GOLABEL | protoplex/sslh-select | protoplex/sslh-fork | protoplex/haproxy | protoplex/direct |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  # row LABEL KEY [-]: the contenders' KEY figures and protoplex's ratios to
  # them ("-": no ratios, for a row that is itself a ratio).
  row() {
    local n out="| $1 |" p=${R[$2,protoplex]:-}
    for n in direct protoplex goroutines sslh fork haproxy; do out+=" ${R[$2,$n]:-–} |"; done
    for n in goroutines sslh fork haproxy direct; do
      if [ "${3:-}" = - ]; then out+=" |"; else out+=" $(ratio "$p" "${R[$2,$n]:-}") |"; fi
    done
    echo "$out"
  }
  row "conn/s, wrk -c1, nginx" wrk1; row "conn/s, wrk -c64, nginx" wrk64
  row "conn/s, c=1" cps1; row "conn/s, c=64" cps64; row "conn/s, c=512" cps512
  row "TTFB p50 µs @${RATE}/s" p50; row "TTFB p99 µs" p99; row "TTFB p99.9 µs" p999
  row "TTFB p50 µs @${RATE}/s, $HOLD held" hp50; row "TTFB p99 µs, $HOLD held" hp99
  row "TTFB p99 held/not held" flat -
  row "bulk GiB/s, 1 stream" bulk1; row "bulk GiB/s, 16 streams" bulk16
  row "CPU s per 100k conns" cpu
  for k in $IDLE_NS; do row "KiB per idle conn, $k held" idle$k; done
  echo
  echo "wrk: \`wrk -t1 -c1\` and \`wrk -t2 -c64\`, $D, \`Connection: close\`, a 512-byte file from one nginx process."
  echo "The other rows use bench/loadgen and bench/backend. Latency is from the planned start of each connection (open"
  echo "loop) to the first reply byte, connect included; added latency = contender − direct. The held rows measure the"
  echo "same while $HOLD forwarded connections stay open and idle (max_connections and maxconn 9,950)."
  echo "Latency errors while held: $(for n in protoplex goroutines haproxy; do echo -n "$n ${R[herr,$n]:-?}, "; done | sed 's/, $//')."
  echo "Idle connections are capped by the 20,000 fds per process of this machine (a proxied connection costs the proxy"
  echo "2 fds), so 100,000 concurrent connections cannot be shown here."
  echo
  echo "## Targets (issue #14)"
  echo
  echo "Ratios of protoplex (and of $GOLABEL) to the reference in this run; absolute values where the target is one."
  echo "Held latency counts as flat within 1.2× of the same contender's p99 without the held connections."
  if [ "$QUICK" = 1 ]; then echo "QUICK=1: short runs that check the script; these figures are no evidence for or against a target."; fi
  echo
  echo "| target | needs | protoplex | $GOLABEL | protoplex verdict |"
  echo "|---|---|---|---|---|"
  # target LABEL NEEDS OP BOUND KEY REF: KEY's ratio to REF's (REF "-":
  # the value itself; REF "self:KEY2": the same contender's KEY2).
  target() {
    local p g pr gr
    case $6 in
      -) pr=-; gr=- ;;
      self:*) pr=${R[${6#self:},protoplex]:-}; gr=${R[${6#self:},goroutines]:-} ;;
      *) pr=${R[$5,$6]:-}; gr=$pr ;;
    esac
    python3 - "$1" "$2" "$3" "$4" "${R[$5,protoplex]:-}" "$pr" "${R[$5,goroutines]:-}" "$gr" <<'PY'
import sys
label, needs, op, bound, p, pref, g, gref = sys.argv[1:]
def value(v, ref):
    try:
        return float(v) if ref == '-' else float(v) / float(ref)
    except (ValueError, ZeroDivisionError):
        return None
def show(v, ref):
    x = value(v, ref)
    if x is None:
        return 'n/a'
    return '%.2f' % x if ref == '-' else '%.2f (%s / %s)' % (x, v, ref)
x = value(p, pref)
ok = x is not None and (x >= float(bound) if op == '>=' else x <= float(bound))
print('| %s | %s | %s | %s | %s |' % (label, needs, show(p, pref), show(g, gref),
      'n/a' if x is None else ('met' if ok else 'not met')))
PY
  }
  last=${IDLE_NS##* }
  target "new conn/s, wrk -c64 vs haproxy" "≥ 1.10×" ">=" 1.10 wrk64 haproxy
  target "new conn/s, wrk -c64 vs sslh-select" "≥ 1.10×" ">=" 1.10 wrk64 sslh
  target "new conn/s, wrk -c1 vs haproxy" "≥ 1.05×" ">=" 1.05 wrk1 haproxy
  target "new conn/s, loadgen c=64 vs haproxy" "≥ 1.10×" ">=" 1.10 cps64 haproxy
  target "new conn/s, loadgen c=64 vs sslh-select" "≥ 1.10×" ">=" 1.10 cps64 sslh
  target "new conn/s, loadgen c=1 vs haproxy" "≥ 1.05×" ">=" 1.05 cps1 haproxy
  target "KiB per idle forwarded conn, $last held" "≤ 1 KiB" "<=" 1 idle$last -
  target "CPU s per 100k conns vs haproxy" "≤ 0.85×" "<=" 0.85 cpu haproxy
  target "bulk, 1 stream vs haproxy" "≥ 1.30×" ">=" 1.30 bulk1 haproxy
  target "bulk, 16 streams vs haproxy" "≥ 1.00×" ">=" 1.00 bulk16 haproxy
  target "TTFB p99 @${RATE}/s vs haproxy" "≤ 1.00×" "<=" 1.00 p99 haproxy
  target "TTFB p99 with $HOLD held vs not held (flat)" "≤ 1.20×" "<=" 1.20 hp99 self:p99
} | tee "$out"
# The UDP table (DNS through dnsperf and the resolver pattern), its own
# contenders: bench/udp.sh.
stop protoplex-w goroutines-w sslh-w haproxy-w nginx backend
echo >> "$out"
QUICK=$QUICK bash bench/udp.sh | tee -a "$out"
# QUIC bulk (gtlsclient through protoplex, nginx stream UDP, direct):
# bench/quic.sh.
echo >> "$out"
QUICK=$QUICK bash bench/quic.sh | tee -a "$out"
echo "written: $out" >&2
