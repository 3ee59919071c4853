#!/usr/bin/env bash
# UDP benchmark: DNS through each contender to one dnsmasq, same run, same
# machine: direct, protoplex (this tree), protoplex built from BEFORE (a git
# ref, default main; BEFORE= skips it) and nginx's stream module (UDP,
# reuseport, proxy_responses 1, 2 workers). Rows: dnsperf -c 1 / 32 / 500
# (source ports of one address), the resolver pattern (bench/loadgen dns
# -newport: a new source port per query, 32 at once), and the RSS per idle
# UDP flow. Prints a markdown table; bench/run.sh appends it to its results.
#   bash bench/udp.sh          (~3 min)
#   QUICK=1 bash bench/udp.sh  (~1 min, checks the script)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
UD=${UD:-10}          # seconds per row
RC=${RC:-32}          # resolver-pattern clients
IDLE_FLOWS=${IDLE_FLOWS:-5000}
BEFORE=${BEFORE-main}
if [ "$QUICK" = 1 ]; then UD=2; IDLE_FLOWS=1000; fi

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v nginx >/dev/null || need+=(nginx-light)
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
source bench/lib.sh
install_packages "${need[@]}"
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

go build -o "$TMP/loadgen" ./bench/loadgen
go build -o "$TMP/protoplex" ./cmd/protoplex
names=(direct protoplex)
if [ -n "$BEFORE" ]; then
  mkdir -p "$TMP/before-src"
  git archive "$BEFORE" | tar -x -C "$TMP/before-src"
  (cd "$TMP/before-src" && go build -o "$TMP/before" ./cmd/protoplex)
  names+=(before)
fi
names+=(nginx)

freeport() { # a port free for both UDP and TCP (dnsmasq binds both), below
  # the ephemeral range: a port the kernel hands out itself (to a resolver
  # run's thousands of source ports) could be taken again before the
  # contender binds it
  python3 -c '
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
while True:
    p = random.randrange(10000, lo if lo > 11000 else 65536)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); t = socket.socket()
    try:
        u.bind(("127.0.0.1", p)); t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        u.close(); t.close()'
}
declare -A PID ADDR R
start() { local name=$1; shift; "$@" > "$TMP/$name.log" 2>&1 & PID[$name]=$!; PIDS+=($!); }
waitdns() { # PORT: until a query through it is answered
  for _ in $(seq 1 100); do
    "$TMP/loadgen" dns -addr "127.0.0.1:$1" -c 1 -d 50ms -timeout 100ms 2>/dev/null | grep -q 'answered=[1-9]' && return 0
    sleep 0.1
  done
  echo "nothing answers DNS on port $1" >&2; tail -n 5 "$TMP"/*.log >&2; return 1
}

DP=$(freeport)
start dnsmasq /usr/sbin/dnsmasq -k -C /dev/null --port="$DP" --listen-address=127.0.0.1 --bind-interfaces --no-resolv \
  --no-hosts --pid-file= --user=root --log-facility=- --address=/example.test/192.0.2.7 --cache-size=0
ADDR[direct]=127.0.0.1:$DP
waitdns "$DP"

# ppconf FILE PORT [EXTRA-PROTOCOL-KEYS]
ppconf() {
  cat > "$1" <<YAML
server:
  listen: "127.0.0.1:0"
  listen_udp: "127.0.0.1:$2"
  log_level: "warn"
protocols:
  - name: DNS
    target: "127.0.0.1:$DP"
$3
YAML
}
P=$(freeport); ppconf "$TMP/protoplex.yaml" "$P" ""; ADDR[protoplex]=127.0.0.1:$P
start protoplex "$TMP/protoplex" -config "$TMP/protoplex.yaml"
if [ -n "$BEFORE" ]; then
  P=$(freeport); ppconf "$TMP/before.yaml" "$P" ""; ADDR[before]=127.0.0.1:$P
  start before "$TMP/before" -config "$TMP/before.yaml"
fi
P=$(freeport); ADDR[nginx]=127.0.0.1:$P
mkdir -p "$TMP/nginx"
cat > "$TMP/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 9000; }
stream {
  server {
    listen 127.0.0.1:$P udp reuseport;
    proxy_pass 127.0.0.1:$DP;
    proxy_responses 1;
    proxy_timeout 10s;
  }
}
CONF
start nginx nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
for n in "${names[@]}"; do waitdns "${ADDR[$n]##*:}"; done

for _ in $(seq 1 1000); do echo "example.test A"; done > "$TMP/queries"
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; }
# The CPU a contender spends is robust to a busy machine where its queries
# per second are not: procs NAME lists its processes (nginx: the workers;
# direct: dnsmasq, the backend itself), ticks sums their utime+stime.
procs() { case $1 in direct) echo "${PID[dnsmasq]}" ;; nginx) pgrep -P "${PID[nginx]}" | tr '\n' ' ' ;; *) echo "${PID[$1]}" ;; esac; }
ticks() { local s=0 p f; for p in "$@"; do read -r -a f < "/proc/$p/stat"; s=$((s + f[13] + f[14])); done; echo $s; }
# cpuper KEY NAME T0 QUERIES: µs of the contender's CPU per answered query.
cpuper() { R[cpu$1,$2]=$(python3 -c "print('%.1f' % (($(ticks $(procs $2)) - $3) * 1e6 / $(getconf CLK_TCK) / max($4, 1)))"); }
for c in 1 32 500; do
  for n in "${names[@]}"; do
    t0=$(ticks $(procs $n))
    out=$(dnsperf -s 127.0.0.1 -p "${ADDR[$n]##*:}" -d "$TMP/queries" -c $c -l "$UD" 2>&1 || true)
    R[qps$c,$n]=$(echo "$out" | awk '/Queries per second:/ { printf "%.0f", $4 }')
    R[lost$c,$n]=$(echo "$out" | awk '/Queries lost:/ { print $3 }')
    cpuper $c $n "$t0" "$(echo "$out" | awk '/Queries completed:/ { print $3 }')"
    echo "dnsperf -c $c $n: qps=${R[qps$c,$n]} lost=${R[lost$c,$n]} cpu_us_per_query=${R[cpu$c,$n]}" >&2
    sleep 1
  done
done
for n in "${names[@]}"; do
  t0=$(ticks $(procs $n))
  out=$("$TMP/loadgen" dns -addr "${ADDR[$n]}" -newport -c "$RC" -d "${UD}s")
  R[qpsres,$n]=$(echo "$out" | kv qps); R[lostres,$n]=$(echo "$out" | kv lost)
  cpuper res $n "$t0" "$(echo "$out" | kv answered)"
  echo "resolver c=$RC $n: $out cpu_us_per_query=${R[cpures,$n]}" >&2
  sleep 1
done

# Idle flows: an instance of each protoplex whose DNS flows outlive their
# answer (udp_responses -1, where the binary knows the key; one without it
# kept every flow), spread over 200 source addresses (under main's per-source
# cap of 64).
P=$(freeport); ppconf "$TMP/pidle.yaml" "$P" "    udp_responses: -1
    udp_idle_timeout: 10m"
start pidle "$TMP/protoplex" -config "$TMP/pidle.yaml"; ADDR[pidle]=127.0.0.1:$P
waitdns "$P"
out=$("$TMP/loadgen" udpidle -addr "${ADDR[pidle]}" -n "$IDLE_FLOWS" -pid "${PID[pidle]}"); echo "udpidle protoplex: $out" >&2
R[idle,protoplex]=$(echo "$out" | kv kib_per_flow)
if [ -n "$BEFORE" ]; then
  # The same keys when BEFORE knows udp_responses (else its flows outlive
  # their answer anyway).
  P=$(freeport); ppconf "$TMP/bidle.yaml" "$P" "    udp_responses: -1
    udp_idle_timeout: 10m"
  "$TMP/before" -check -config "$TMP/bidle.yaml" >/dev/null 2>&1 || ppconf "$TMP/bidle.yaml" "$P" "    udp_idle_timeout: 10m"
  start bidle "$TMP/before" -config "$TMP/bidle.yaml"; ADDR[bidle]=127.0.0.1:$P
  waitdns "$P"
  out=$("$TMP/loadgen" udpidle -addr "${ADDR[bidle]}" -n "$IDLE_FLOWS" -pid "${PID[bidle]}"); echo "udpidle before: $out" >&2
  R[idle,before]=$(echo "$out" | kv kib_per_flow)
fi

ratio() { python3 -c "a,b='$1','$2'
try: print('%.2f' % (float(a)/float(b)))
except Exception: print('n/a')"; }
blabel="protoplex ${BEFORE:-before}"
echo "## UDP: DNS through one port to dnsmasq"
echo
echo "dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p'), $(nginx -v 2>&1 | cut -d' ' -f3) stream (udp reuseport, proxy_responses 1, 2 workers), ${UD}s a row, QUICK=$QUICK."
echo "protoplex $(git rev-parse --short HEAD 2>/dev/null || echo '?')$([ -n "$BEFORE" ] && echo ", $blabel $(git rev-parse --short "$BEFORE")")."
echo
echo "| row | direct qps | nginx qps | protoplex qps | $blabel qps | protoplex/nginx | lost: direct / nginx / protoplex / $blabel | proxy CPU µs per query: nginx / protoplex / $blabel (dnsmasq) |"
echo "|---|---|---|---|---|---|---|---|"
for k in 1 32 500 res; do
  label="dnsperf -c $k"; [ $k = res ] && label="new source port per query, $RC at once"
  echo "| $label | ${R[qps$k,direct]:-–} | ${R[qps$k,nginx]:-–} | ${R[qps$k,protoplex]:-–} | ${R[qps$k,before]:-–} | $(ratio "${R[qps$k,protoplex]:-}" "${R[qps$k,nginx]:-}") | ${R[lost$k,direct]:-–} / ${R[lost$k,nginx]:-–} / ${R[lost$k,protoplex]:-–} / ${R[lost$k,before]:-–} | ${R[cpu$k,nginx]:-–} / ${R[cpu$k,protoplex]:-–} / ${R[cpu$k,before]:-–} (${R[cpu$k,direct]:-–}) |"
done
echo
echo "KiB of RSS per idle UDP flow ($IDLE_FLOWS answered DNS flows held): protoplex ${R[idle,protoplex]:-–}, $blabel ${R[idle,before]:-–}."
