package cluster

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/darkit/protoplex/internal/testnet"
)

// etcdCounters are what etcd's /metrics says it served: unary requests,
// messages received on streams (lease keep-alives, watch requests), watch
// responses sent and events delivered to watchers.
type etcdCounters struct{ unary, streamIn, watchOut, events, sentBytes float64 }

func (a etcdCounters) sub(b etcdCounters) etcdCounters {
	return etcdCounters{a.unary - b.unary, a.streamIn - b.streamIn, a.watchOut - b.watchOut, a.events - b.events, a.sentBytes - b.sentBytes}
}

func readEtcdCounters(tb testing.TB, client string) etcdCounters {
	tb.Helper()
	resp, err := http.Get("http://" + client + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var c etcdCounters
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		switch name := line[:i]; {
		case strings.HasPrefix(name, "grpc_server_msg_received_total{") && strings.Contains(name, `grpc_type="unary"`):
			c.unary += v
		case strings.HasPrefix(name, "grpc_server_msg_received_total{") && strings.Contains(name, `grpc_type="bidi_stream"`):
			c.streamIn += v
		case strings.HasPrefix(name, "grpc_server_msg_sent_total{") && strings.Contains(name, `grpc_method="Watch"`):
			c.watchOut += v
		case name == "etcd_debugging_mvcc_events_total":
			c.events = v
		case name == "etcd_network_client_grpc_sent_bytes_total":
			c.sentBytes = v
		}
	}
	return c
}

// settled reads the counters once they stop moving: writes a node makes
// after it applied a change (its status) land after the wait for it.
func settled(tb testing.TB, client string) etcdCounters {
	last := readEtcdCounters(tb, client)
	for i := 0; i < 50; i++ {
		time.Sleep(200 * time.Millisecond) // a poll of etcd's counters, not a synchronisation
		c := readEtcdCounters(tb, client)
		if c == last {
			break
		}
		last = c
	}
	return last
}

// scaleNode counts what one node's handlers were told.
type scaleNode struct {
	n       *Node
	config  atomic.Value // string
	mu      sync.Mutex
	inst    map[string]bool
	banned  map[netip.Addr]bool
	configs atomic.Int64
}

// BenchmarkClusterCost measures what one change costs etcd with 5, 20 and
// 50 nodes (in-process cluster clients, each with its own etcd connection):
// requests, stream messages, watch responses and watch events per
// operation, from etcd's /metrics, each operation waited for until every
// node has applied it. lease_ttl is 60 s so that keep-alives and progress
// requests (every 20 s per node) stay out of the counts; idle measures
// them with the default 10 s.
//
//	go test -run '^$' -bench BenchmarkClusterCost -benchtime 20x ./internal/cluster/
func BenchmarkClusterCost(b *testing.B) {
	for _, nodes := range []int{5, 20, 50} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			etcd := testnet.StartEtcd(b)
			cli := etcdClient(b, etcd.Client)
			ns := make([]*scaleNode, nodes)
			for i := range ns {
				sn := &scaleNode{inst: map[string]bool{}, banned: map[netip.Addr]bool{}}
				n, err := Start(context.Background(), Options{NodeID: fmt.Sprintf("n%03d", i), Endpoints: []string{etcd.Client},
					LeaseTTL: time.Minute, ConfigKey: "/protoplex/config", Logger: slog.New(slog.DiscardHandler)}, Handlers{
					Services: func(m map[string][]Service) {
						sn.mu.Lock()
						for _, s := range m["ssh"] {
							sn.inst[s.Instance] = true
						}
						sn.mu.Unlock()
					},
					Config: func(y []byte) error { sn.config.Store(string(y)); sn.configs.Add(1); return nil },
					Ban:    func(ip netip.Addr, _ time.Duration) { sn.mu.Lock(); sn.banned[ip] = true; sn.mu.Unlock() },
				})
				if err != nil {
					b.Fatal(err)
				}
				sn.n = n
				ns[i] = sn
			}
			defer func() {
				for _, sn := range ns {
					sn.n.Close()
				}
			}()
			all := func(what string, ok func(sn *scaleNode) bool) {
				testnet.Eventually(b, 60*time.Second, func() bool {
					for _, sn := range ns {
						if !ok(sn) {
							return false
						}
					}
					return true
				}, "not every node has %s", what)
			}
			all("connected", func(sn *scaleNode) bool { return sn.n.Connected() })
			ctx := context.Background()
			measure := func(name string, op func(i int), applied func(sn *scaleNode, i int) bool) {
				b.Run(name, func(b *testing.B) {
					before := readEtcdCounters(b, etcd.Client)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						op(i)
						all(name, func(sn *scaleNode) bool { return applied(sn, i) })
					}
					b.StopTimer()
					d := settled(b, etcd.Client).sub(before)
					per := float64(b.N)
					b.ReportMetric(d.unary/per, "requests/op")
					b.ReportMetric(d.streamIn/per, "stream-msgs-in/op")
					b.ReportMetric(d.watchOut/per, "watch-responses/op")
					b.ReportMetric(d.events/per, "watch-events/op")
				})
			}
			seq := 0 // sub-benchmarks run more than once: keys unique over all runs
			measure("config", func(int) {
				seq++
				if _, err := cli.Put(ctx, "/protoplex/config", fmt.Sprintf("v%d", seq)); err != nil {
					b.Fatal(err)
				}
			}, func(sn *scaleNode, _ int) bool {
				v, _ := sn.config.Load().(string)
				return v == fmt.Sprintf("v%d", seq)
			})
			measure("register", func(int) {
				seq++
				if err := Register(ctx, cli, Service{Protocol: "ssh", Instance: fmt.Sprintf("i%d", seq), Address: "127.0.0.1:1"}, 0); err != nil {
					b.Fatal(err)
				}
			}, func(sn *scaleNode, _ int) bool {
				sn.mu.Lock()
				defer sn.mu.Unlock()
				return sn.inst[fmt.Sprintf("i%d", seq)]
			})
			ip := func() netip.Addr { return netip.AddrFrom4([4]byte{10, byte(seq >> 16), byte(seq >> 8), byte(seq)}) }
			measure("ban", func(int) {
				seq++
				if err := ns[0].n.PublishBan(ip(), time.Minute); err != nil {
					b.Fatal(err)
				}
			}, func(sn *scaleNode, _ int) bool {
				sn.mu.Lock()
				defer sn.mu.Unlock()
				return sn == ns[0] || sn.banned[ip()]
			})
		})
	}
}

// BenchmarkClusterIdle measures what idle nodes cost etcd per node and per
// second: the lease keep-alive and the progress request each node sends
// every lease_ttl/3 (1 s here, lease_ttl 3 s), and the watch responses.
//
//	go test -run '^$' -bench BenchmarkClusterIdle -benchtime 1x ./internal/cluster/
func BenchmarkClusterIdle(b *testing.B) {
	const window = 10 * time.Second
	for _, nodes := range []int{5, 20} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			etcd := testnet.StartEtcd(b)
			for i := 0; i < nodes; i++ {
				n, err := Start(context.Background(), Options{NodeID: fmt.Sprintf("n%03d", i), Endpoints: []string{etcd.Client},
					LeaseTTL: 3 * time.Second, Logger: slog.New(slog.DiscardHandler)}, Handlers{})
				if err != nil {
					b.Fatal(err)
				}
				defer n.Close()
			}
			b.ResetTimer()
			before := readEtcdCounters(b, etcd.Client)
			time.Sleep(window) // the window measured
			d := readEtcdCounters(b, etcd.Client).sub(before)
			per := float64(nodes) * window.Seconds()
			b.ReportMetric(d.unary/per, "requests/node/s")
			b.ReportMetric(d.streamIn/per, "stream-msgs-in/node/s")
			b.ReportMetric(d.watchOut/per, "watch-responses/node/s")
		})
	}
}

// BenchmarkClusterRecovery measures what etcd serves when it comes back
// after an outage and every node reconnects at once: 20 nodes, a state of
// 200 services, 50 bans and a shared configuration. etcd's counters start
// at zero with its new process, so everything counted once the nodes are
// all back (and one second more) is the recovery. lease_ttl is 6 s: the
// keep-alives and progress requests of that second are in the counts.
//
//	go test -run '^$' -bench BenchmarkClusterRecovery -benchtime 1x ./internal/cluster/
func BenchmarkClusterRecovery(b *testing.B) {
	const nodes = 20
	etcd := testnet.StartEtcd(b)
	cli := etcdClient(b, etcd.Client)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if err := Register(ctx, cli, Service{Protocol: fmt.Sprintf("p%d", i%10), Instance: fmt.Sprintf("i%d", i), Address: "127.0.0.1:1"}, 0); err != nil {
			b.Fatal(err)
		}
	}
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("%s10.0.0.%d", BansPrefix, i), "1h0m0s", clientv3.WithLease(lease.ID)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/protoplex/config", strings.Repeat("# a shared configuration\n", 40)); err != nil {
		b.Fatal(err)
	}
	var ns []*Node
	for i := 0; i < nodes; i++ {
		n, err := Start(ctx, Options{NodeID: fmt.Sprintf("n%03d", i), Endpoints: []string{etcd.Client}, LeaseTTL: 6 * time.Second,
			ConfigKey: "/protoplex/config", Logger: slog.New(slog.DiscardHandler)}, Handlers{})
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		ns = append(ns, n)
	}
	b.ResetTimer()
	etcd.Stop()
	testnet.Eventually(b, 30*time.Second, func() bool {
		for _, n := range ns {
			if n.Connected() {
				return false
			}
		}
		return true
	}, "a node never saw etcd go")
	etcd.Start()
	testnet.Eventually(b, 60*time.Second, func() bool {
		for _, n := range ns {
			if !n.Connected() {
				return false
			}
		}
		return true
	}, "a node never came back")
	time.Sleep(time.Second) // the reads that follow a reconnection, then the counters
	d := readEtcdCounters(b, etcd.Client)
	b.ReportMetric(d.unary/nodes, "requests/node")
	b.ReportMetric(d.streamIn/nodes, "stream-msgs-in/node")
	b.ReportMetric(d.sentBytes/nodes, "sent-bytes/node")
}
