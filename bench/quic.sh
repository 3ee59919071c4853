#!/usr/bin/env bash
# QUIC bulk benchmark: one large HTTP/3 download with ngtcp2's client
# (gtlsclient) from ngtcp2's server (gtlsserver) on one machine, same run:
# direct, through protoplex (this tree: listen_udp, one quic route) and
# through nginx's stream module (UDP, reuseport, 2 workers, no
# proxy_responses). Rounds alternate the contenders; it prints the median
# wall time and MiB/s of each, the ratios to nginx and to direct, and the
# proxy's CPU per MiB (utime+stime from /proc). A markdown section;
# bench/run.sh appends it to its results.
#   bash bench/quic.sh          (~2 min)
#   QUICK=1 bash bench/quic.sh  (< 1 min, checks the script)
#   QPERF=1 bash bench/quic.sh  (then a perf profile of protoplex)
#   BASE="main abc123" bash bench/quic.sh  (also protoplex built at each
#                               of these git refs, in the same rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
QMIB=${QMIB:-512}     # size of the file, MiB
QROUNDS=${QROUNDS:-5} # downloads per contender, alternating
QTIMEOUT=${QTIMEOUT:-120}
BASE=${BASE:-}        # git refs of protoplex to measure beside this tree
if [ "$QUICK" = 1 ]; then QMIB=64; QROUNDS=3; QTIMEOUT=30; fi

skip() { printf '## QUIC bulk: a %s MiB download through one UDP port\n\nskipped: %s\n' "$QMIB" "$1"; exit 0; }
have() {
  command -v gtlsclient >/dev/null && [ -x /usr/sbin/gtlsserver ] && command -v nginx >/dev/null &&
    [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] && command -v openssl >/dev/null
}
if ! have; then
  need=()
  command -v gtlsclient >/dev/null || need+=(ngtcp2-client)
  [ -x /usr/sbin/gtlsserver ] || need+=(ngtcp2-server)
  command -v nginx >/dev/null || need+=(nginx-light)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
  command -v openssl >/dev/null || need+=(openssl)
  if [ "$(id -u)" = 0 ]; then
    source bench/lib.sh
    install_packages "${need[@]}" || true
  fi
  have || skip "missing ${need[*]} (Debian packages)"
fi

TMP=$(mktemp -d)
# The downloads land in RAM (tmpfs), so the disk is no contender.
DL=$(mktemp -d -p /dev/shm protoplex-quicbench.XXXXXX 2>/dev/null || mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP" "$DL"; }
trap cleanup EXIT

go build -o "$TMP/protoplex" ./cmd/protoplex
bases=()
for ref in $BASE; do
  b=base-$(git rev-parse --short "$ref")
  mkdir -p "$TMP/$b"
  git archive "$ref" | tar -x -C "$TMP/$b"
  (cd "$TMP/$b" && go build -o "$TMP/$b/protoplex" ./cmd/protoplex)
  bases+=("$b")
done

udpport() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
declare -A PID ADDR
start() { local name=$1; shift; "$@" > "$TMP/$name.log" 2>&1 & PID[$name]=$!; PIDS+=($!); }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1
mkdir -p "$TMP/docs"
echo ok > "$TMP/docs/who"
# A sparse file: the server reads zeros from the page cache, not the disk.
truncate -s "${QMIB}M" "$TMP/docs/big"
SP=$(udpport)
start server /usr/sbin/gtlsserver -q -d "$TMP/docs" 127.0.0.1 "$SP" "$TMP/key.pem" "$TMP/cert.pem"
ADDR[direct]=$SP

# protoplex NAME BINARY: a protoplex contender, one quic route to the server.
protoplex() {
  local port; port=$(udpport)
  cat > "$TMP/$1.yaml" <<YAML
server:
  listen: "127.0.0.1:0"
  listen_udp: "127.0.0.1:$port"
  log_level: "warn"
protocols:
  - name: quic
    target: "127.0.0.1:$SP"
YAML
  start "$1" "$2" -config "$TMP/$1.yaml"
  ADDR[$1]=$port
}
protoplex protoplex "$TMP/protoplex"
for b in "${bases[@]}"; do protoplex "$b" "$TMP/$b/protoplex"; done

NP=$(udpport)
mkdir -p "$TMP/nginx"
cat > "$TMP/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 2;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
stream {
  server {
    listen 127.0.0.1:$NP udp reuseport;
    proxy_pass 127.0.0.1:$SP;
    proxy_timeout 10m;
  }
}
CONF
start nginx nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
ADDR[nginx]=$NP
names=(direct protoplex nginx "${bases[@]}")

# fetch PORT PATH: gtlsclient downloads https://localhost/PATH through
# 127.0.0.1:PORT into $DL, bounded by QTIMEOUT; prints the bytes it got.
fetch() {
  rm -f "$DL/$2"
  timeout "$QTIMEOUT" gtlsclient -q --exit-on-all-streams-close --timeout=10s --download="$DL" \
    127.0.0.1 "$1" "https://localhost/$2" >/dev/null 2>&1 || true
  stat -c %s "$DL/$2" 2>/dev/null || echo 0
}
for n in "${names[@]}"; do
  ok=0
  for _ in $(seq 1 50); do
    if [ "$(fetch "${ADDR[$n]}" who)" = 3 ]; then ok=1; break; fi
    sleep 0.2
  done
  if [ $ok = 0 ]; then echo "no QUIC download through $n (port ${ADDR[$n]})" >&2; tail -n 5 "$TMP"/*.log >&2; exit 1; fi
done

# procs NAME: the processes whose CPU is the contender's (nginx: its
# workers; direct: the QUIC server itself). ticks: their utime+stime.
procs() { case $1 in direct) echo "${PID[server]}" ;; nginx) pgrep -P "${PID[nginx]}" | tr '\n' ' ' ;; *) echo "${PID[$1]}" ;; esac; }
ticks() { local s=0 p f; for p in "$@"; do read -r -a f < "/proc/$p/stat"; s=$((s + f[13] + f[14])); done; echo $s; }
now() { date +%s.%N; }
# drops: the kernel's UDP datagrams dropped for a full receive buffer (the
# whole network namespace: other jobs' drops count too).
drops() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp; }
# sockdrops PIDS: "inode:drops" of each UDP socket the processes hold.
sockdrops() {
  python3 - "$@" <<'PY'
import os, sys
mine = set()
for pid in sys.argv[1:]:
    try:
        for fd in os.listdir('/proc/%s/fd' % pid):
            try:
                link = os.readlink('/proc/%s/fd/%s' % (pid, fd))
            except OSError:
                continue
            if link.startswith('socket:['):
                mine.add(link[8:-1])
    except OSError:
        pass
for table in ('/proc/net/udp', '/proc/net/udp6'):
    for line in open(table).readlines()[1:]:
        f = line.split()
        if f[9] in mine:
            print('%s:%s' % (f[9], f[-1]), end=' ')
PY
}
# dropped BEFORE AFTER: datagrams the sockets of AFTER dropped since BEFORE.
dropped() { python3 -c "
import sys
b = dict(x.split(':') for x in sys.argv[1].split())
print(sum(int(d) - int(b.get(i, 0)) for i, d in (x.split(':') for x in sys.argv[2].split())))" "$1" "$2"; }
# One untimed download first: the server's first read of the sparse file
# (its pages entering the page cache) is slower, and would fall on the
# first contender of round 1.
fetch "${ADDR[direct]}" big >/dev/null; rm -f "$DL/big"
declare -A SECS TICKS FAIL DROPS PDROPS ROUND
for r in $(seq 1 "$QROUNDS"); do
  # Each round starts with a different contender, so a change of the
  # machine's load does not always fall on the same one.
  for i in "${!names[@]}"; do
    n=${names[$(((i + r) % ${#names[@]}))]}
    t0=$(ticks $(procs "$n")); d0=$(drops); s0=$(sockdrops $(procs "$n")); w0=$(now)
    got=$(fetch "${ADDR[$n]}" big)
    w1=$(now); t1=$(ticks $(procs "$n")); d1=$(drops); pd=$(dropped "$s0" "$(sockdrops $(procs "$n"))")
    DROPS[$n]="${DROPS[$n]:-}${DROPS[$n]:+ }$((d1 - d0))"; PDROPS[$n]="${PDROPS[$n]:-}${PDROPS[$n]:+ }$pd"
    rm -f "$DL/big"
    if [ "$got" != $((QMIB * 1048576)) ]; then
      FAIL[$n]=$((${FAIL[$n]:-0} + 1)); echo "round $r $n: got $got bytes of $((QMIB * 1048576))" >&2; continue
    fi
    s=$(python3 -c "print('%.3f' % ($w1 - $w0))")
    SECS[$n]="${SECS[$n]:-} $s"; TICKS[$n]=$((${TICKS[$n]:-0} + t1 - t0)); ROUND[$n,$r]=$s
    echo "round $r $n: ${s}s $(python3 -c "print('%.0f' % ($QMIB / $s))") MiB/s cpu_ticks=$((t1 - t0)) rcvbuf_drops=$((d1 - d0)) its_sockets=$pd" >&2
  done
done

# stats NAME: median s, median MiB/s, min–max MiB/s, CPU ms per MiB (all
# of its successful rounds together).
stats() {
  python3 - "$QMIB" "$(getconf CLK_TCK)" "${TICKS[$1]:-0}" ${SECS[$1]:-} <<'PY'
import statistics, sys
mib, hz, ticks = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
secs = [float(x) for x in sys.argv[4:]]
if not secs:
    print('– – – –'); sys.exit()
rates = [mib / s for s in secs]
print('%.2f %.0f %.0f–%.0f %.2f' % (statistics.median(secs), statistics.median(rates), min(rates), max(rates),
                                   ticks * 1000.0 / hz / (mib * len(secs))))
PY
}
declare -A MED RATE SPREAD CPU
for n in "${names[@]}"; do read -r MED[$n] RATE[$n] SPREAD[$n] CPU[$n] <<< "$(stats "$n")"; done
ratio() { python3 -c "a,b='$1','$2'
try: print('%.2f' % (float(a)/float(b)))
except Exception: print('n/a')"; }

echo "## QUIC bulk: a $QMIB MiB download through one UDP port"
echo
echo "ngtcp2 $(dpkg-query -W -f '${Version}' ngtcp2-client 2>/dev/null || echo '?') gtlsclient → gtlsserver (HTTP/3, cubic, a sparse file), the download to tmpfs;"
echo "$(nginx -v 2>&1 | cut -d' ' -f3) stream (udp reuseport, 2 workers, no proxy_responses); protoplex $(git rev-parse --short HEAD 2>/dev/null || echo '?') (listen_udp, one quic route)${BASE:+; BASE: $BASE}."
echo "$QROUNDS rounds, contenders alternating, medians; QUICK=$QUICK; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo
echo "| contender | median s | median MiB/s | MiB/s min–max | vs nginx | vs direct | CPU ms per MiB | drops per round: its sockets / the host | failed |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in "${names[@]}"; do
  label=$n; [ "$n" = direct ] && label="direct (CPU: gtlsserver)"; [ "$n" = nginx ] && label="nginx (CPU: its workers)"
  [ "$n" = protoplex ] && label="protoplex (this tree)"; [ "${n#base-}" != "$n" ] && label="protoplex ${n#base-} (BASE)"
  echo "| $label | ${MED[$n]} | ${RATE[$n]} | ${SPREAD[$n]} | $(ratio "${RATE[$n]}" "${RATE[nginx]}") | $(ratio "${RATE[$n]}" "${RATE[direct]}") | ${CPU[$n]} | ${PDROPS[$n]:-–} / ${DROPS[$n]:-–} | ${FAIL[$n]:-0} |"
done
echo
# The receive buffers the proxies' UDP sockets have (ss's skmem rb, twice
# what was asked for): each listening socket and each flow's upstream
# socket, still open after the last round.
rcvbufs() {
  ss -Huanmp 2>/dev/null | python3 -c "
import re, sys
pids = set(sys.argv[1:])
lines = sys.stdin.read().split('\n')
out = {}
for a, b in zip(lines, lines[1:]):
    rb = re.search(r'rb(\d+)', b)
    if not rb or not pids & set(re.findall(r'pid=(\d+)', a)):
        continue
    kind = 'listener' if a.split()[0] == 'UNCONN' else 'upstream'
    out.setdefault(kind, set()).add(rb.group(1))
print('; '.join('%s %s' % (k, ', '.join(sorted(v))) for k, v in sorted(out.items())) or '?')" "$@"
}
# Per round, each protoplex's MiB/s over nginx's in the same round.
for n in protoplex "${bases[@]}"; do
  per=""
  for r in $(seq 1 "$QROUNDS"); do per="$per $(ratio "${ROUND[nginx,$r]:-x}" "${ROUND[$n,$r]:-x}")"; done
  echo "$n / nginx, MiB/s per round:$per."
done
echo
rb="SO_RCVBUF (ss rb):"
for n in protoplex "${bases[@]}" nginx; do rb="$rb $n $(rcvbufs $(procs "$n"));"; done
echo "${rb%;}."
echo
v=$(python3 -c "
try: print('met' if float('${RATE[protoplex]}') >= float('${RATE[nginx]}') else 'not met')
except Exception: print('n/a')")
echo "Target (issue #26) QUIC bulk ≥ 1.0× nginx stream: $(ratio "${RATE[protoplex]}" "${RATE[nginx]}") — $v."
if [ "$QUICK" = 1 ]; then echo "QUICK=1: short runs that check the script; these figures are no evidence for or against the target."; fi

# QPERF=1: one more download through protoplex under perf (cpu-clock, call
# graphs from Go's frame pointers): where its CPU goes, inclusive shares.
if [ "${QPERF:-0}" = 1 ]; then
  if ! command -v perf >/dev/null; then echo; echo "QPERF=1: no perf (Debian linux-perf), no profile."; exit 0; fi
  perf record -q -F 999 -g -p "${PID[protoplex]}" -o "$TMP/perf.data" -- sleep 3600 >/dev/null 2>&1 &
  perfpid=$!; PIDS+=($perfpid); sleep 0.5
  fetch "${ADDR[protoplex]}" big >/dev/null
  kill -INT "$perfpid"; wait "$perfpid" 2>/dev/null || true
  echo
  echo "\`perf record -F 999 -g -p\` protoplex over one more download, \`perf report --children\` (the 30 largest):"
  echo
  echo '```'
  perf report -i "$TMP/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep '%' | sed 's/[ -]*$//' | head -30
  echo '```'
fi
