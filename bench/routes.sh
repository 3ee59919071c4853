#!/usr/bin/env bash
# Routing by name at scale (issue #24): new TLS connections per second
# through protoplex as the number of SNI routes and names grows, before
# (BASE, default main) and after (this tree), in one run on one machine.
# Every connection sends a real ClientHello (Go's) with its own random and
# session ID, for the last name in file order, to a backend that answers
# one byte (bench/loadgen tls, bench/backend -byte). Then the in-process
# Evaluate benchmark of both trees. Writes bench/results/DATE-routes.md.
#   bash bench/routes.sh               (~6 min)
#   QUICK=1 bash bench/routes.sh       (~1 min, to check the script)
# Knobs: BASE (git ref), D (per measurement, 4s), C (concurrency, 32),
# REPS (rounds over every config, before and after, 3).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-main}; D=${D:-4s}; C=${C:-32}; REPS=${REPS:-3}; QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then D=1s; REPS=1; fi
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

base=$(git rev-parse --short "$BASE")
mkdir -p "$TMP/base"
git archive "$BASE" | tar -x -C "$TMP/base"
(cd "$TMP/base" && go build -o "$TMP/before" ./cmd/protoplex)
go build -o "$TMP/after" ./cmd/protoplex
go build -o "$TMP/backend" ./bench/backend
go build -o "$TMP/loadgen" ./bench/loadgen

freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

BP=$(freeport)
"$TMP/backend" -http 127.0.0.1:0 -ssh 127.0.0.1:0 -byte 127.0.0.1:$BP > "$TMP/backend.log" 2>&1 & PIDS+=($!)
waitport "$BP"

# conf NAME ROUTES NAMES [file]: ROUTES TLS routes of NAMES names each
# ("n<j>.r<r>.example.com"), inline or (file) one route's names in a
# sni_file; prints the name routed (the last).
conf() {
  python3 - "$TMP" "$1" "$2" "$3" "$BP" "${4:-}" <<'PY'
import sys
tmp, name, routes, names, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
out = ['server:\n  listen: "127.0.0.1:0"\n  log_level: "warn"\nprotocols:\n']
for r in range(routes):
    out.append('  - name: tls\n    target: "127.0.0.1:%s"\n' % port)
    if mode == 'file':
        with open('%s/%s.txt' % (tmp, name), 'w') as f:
            f.write(''.join('n%d.r%d.example.com\n' % (j, r) for j in range(names)))
        out.append('    sni_file: %s.txt\n' % name)
    else:
        out.append('    sni:\n' + ''.join('      - n%d.r%d.example.com\n' % (j, r) for j in range(names)))
out.append('monitoring:\n  metrics_port: 0\n  health_check_port: 0\n')
with open('%s/%s.yaml' % (tmp, name), 'w') as f:
    f.write(''.join(out))
print('n%d.r%d.example.com' % (names - 1, routes - 1))
PY
}

# configs: label, name, routes, names each, mode (file: after only)
CONFIGS=(
  "1 SNI route|r1|1|1|"
  "1,000 SNI routes, one name each|r1000|1000|1|"
  "1 route of 10,000 names|n10k|1|10000|"
  "100,000 names (10 routes of 10,000)|n100k|10|10000|"
  "100,000 names in one sni_file|f100k|1|100000|file"
)
# Every server runs for the whole run and each round measures every config
# before and after in turn, so that a change of the machine's load (other
# work on a shared machine) spreads over all the figures alike.
declare -A R U PORT SNI SPID
for cfg in "${CONFIGS[@]}"; do
  IFS='|' read -r label name routes names mode <<< "$cfg"
  SNI[$name]=$(conf "$name" "$routes" "$names" "$mode")
  for bin in before after; do
    R[$name,$bin]=""; U[$name,$bin]=""
    [ "$mode" = file ] && [ $bin = before ] && continue
    listen=$(freeport)
    sed "s/127.0.0.1:0\"/127.0.0.1:$listen\"/" "$TMP/$name.yaml" > "$TMP/$name-$bin.yaml"
    "$TMP/$bin" -config "$TMP/$name-$bin.yaml" > "$TMP/$name-$bin.log" 2>&1 & PIDS+=($!); SPID[$name,$bin]=$!
    PORT[$name,$bin]=$listen
    waitport "$listen" || { cat "$TMP/$name-$bin.log" >&2; exit 1; }
    "$TMP/loadgen" tls -addr 127.0.0.1:$listen -sni "${SNI[$name]}" -c "$C" -d 1s > /dev/null # warm-up
  done
done
for rep in $(seq 1 "$REPS"); do
  for cfg in "${CONFIGS[@]}"; do
    IFS='|' read -r label name routes names mode <<< "$cfg"
    for bin in before after; do
      [ -n "${PORT[$name,$bin]:-}" ] || continue
      out=$("$TMP/loadgen" tls -addr 127.0.0.1:${PORT[$name,$bin]} -sni "${SNI[$name]}" -c "$C" -d "$D" -pid "${SPID[$name,$bin]}")
      echo "$name $bin #$rep: $out" >&2
      R[$name,$bin]+="$(echo "$out" | sed -n 's/.*\bcps=\([0-9]*\).*/\1/p') "
      U[$name,$bin]+="$(echo "$out" | sed -n 's/.*\bcpu_us_per_conn=\([0-9.]*\).*/\1/p') "
    done
  done
done

# The in-process benchmark, this tree's file run against both trees.
cp internal/identify/route_bench_test.go "$TMP/base/internal/identify/"
# Three runs of each tree, alternating; the table keeps each one's fastest.
bt=2000x; runs=3; [ "$QUICK" = 1 ] && bt=200x && runs=1
(cd "$TMP/base" && go test -c -o "$TMP/identify-before.test" ./internal/identify/)
go test -c -o "$TMP/identify-after.test" ./internal/identify/
for _ in $(seq 1 $runs); do
  for bin in before after; do
    (cd internal/identify && "$TMP/identify-$bin.test" -test.run '^$' -test.bench 'EvaluateSNI' -test.benchtime $bt -test.benchmem) | tee -a "$TMP/eval-$bin.txt" >&2
  done
done

date=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p bench/results
out="bench/results/$date-routes.md"
python3 - "$out" "$TMP" "$base" "$(git rev-parse --short HEAD)" "$D" "$C" "$REPS" "$QUICK" "$(nproc)" \
  "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$(go version | cut -d' ' -f3)" <<PY
import re, statistics, sys
out, tmp, base, head, d, c, reps, quick, cores, cpu, gover = sys.argv[1:]
rows = [l.split('|') for l in """$(printf '%s\n' "${CONFIGS[@]}")""".strip().split('\n')]
R, U = {}, {}
$(for k in "${!R[@]}"; do echo "R['$k'] = '${R[$k]}'"; echo "U['$k'] = '${U[$k]}'"; done)
def med(k, m=R):
    v = [float(x) for x in m.get(k, '').split()]
    return statistics.median(v) if v else None
lines = ['# Routing by name at scale (issue #24), %s' % sys.argv[1].split('/')[-1][:16], '',
  'Machine: %s cores, %s, %s. Before: %s (%s), after: %s. Each connection: a new TCP connection sending Go\'s TLS ClientHello' % (cores, cpu, gover, base, '$BASE', head),
  'with its own random and session ID for the last name in file order, to a backend that answers one byte; '
  '\`loadgen tls -c %s\`, %s per measurement, the median of %s rounds, each measuring every config before and after in turn. QUICK=%s.' % (c, d, reps, quick), '',
  '| config | before conn/s | before vs 1 route | after conn/s | after vs 1 route | after / before | before CPU µs/conn | after CPU µs/conn | after CPU vs 1 route |',
  '|---|---|---|---|---|---|---|---|---|']
b1, a1 = med('r1,before'), med('r1,after')
f = lambda x: '–' if x is None else '%.0f' % x
r = lambda x, y: '–' if x is None or not y else ('%.2f' % (x / y) if x / y >= 0.01 else '1/%.0f' % (y / x))
for label, name, *_ in rows:
    b, a = med(name + ',before'), med(name + ',after')
    ub, ua = med(name + ',before', U), med(name + ',after', U)
    g = lambda x: '–' if x is None else '%.1f' % x
    lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (label, f(b), r(b, b1), f(a), r(a, a1), r(a, b), g(ub), g(ua), r(ua, med('r1,after', U))))
lines += ['', 'CPU µs/conn: the CPU time (user + system) the protoplex process spent per connection during the same measurements,',
  'a figure other work on a shared machine moves less than the rate.', '', '10,000 routes cannot be configured (at most 1,024 protocols and 4,096 targets in all); the in-process', 'benchmark below has them.', '',
  '\`go test -bench EvaluateSNI\` (internal/identify/route_bench_test.go), the same file in both trees, 3 runs each alternating,', 'the fastest of each:', '',
  '| routes / names | before ns/op | before allocs | after ns/op | after allocs | after / before |', '|---|---|---|---|---|---|']
def bench(path):
    res = {}
    for l in open(path):
        m = re.match(r'BenchmarkEvaluateSNI/(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op\s+\d+ B/op\s+(\d+) allocs/op', l)
        if m and (m.group(1) not in res or float(m.group(2)) < res[m.group(1)][0]):
            res[m.group(1)] = (float(m.group(2)), m.group(3))
    return res
eb, ea = bench(tmp + '/eval-before.txt'), bench(tmp + '/eval-after.txt')
for k in ea:
    b, a = eb.get(k, (None, '–')), ea[k]
    lines.append('| %s | %s | %s | %.0f | %s | %s |' % (k.replace('routes=', '').replace('/names=', ' / '), f(b[0]), b[1], a[0], a[1], r(a[0], b[0])))
open(out, 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
PY
echo "written: $out" >&2
