package protoplex_test

// The README's samples, compiled and run as examples: users copy them, so
// they keep the README's lines (with only the import path changed) and
// check around them what they do, each printing what it set up.

import (
	"context"
	"encoding/binary"
	"fmt"
	"log"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/protocols"
)

// check stops the example on an error, as a program would.
func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// printProtocols prints the names of the protocols pm routes, in order.
func printProtocols(pm *protoplex.ProtocolManager) {
	for _, p := range pm.Protocols() {
		fmt.Println(p.Name)
	}
}

func Example_quickStart() {
	pm := protoplex.NewProtocolManager()
	defer pm.Close()
	check(pm.AddProtocol(protocols.NewHTTPWebDAVProtocol("192.168.1.5:80")))
	check(pm.AddProtocol(protocols.NewMQTTProtocol("127.0.0.1:1883")))
	check(pm.AddProtocol(protocols.NewRedisProtocol("192.168.1.6:6379")))
	printProtocols(pm)
	// RunServer serves until its context ends: cancelled here, it returns
	// nil at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := pm.RunServer(ctx, "127.0.0.1:0"); err != nil {
		log.Fatal("启动失败:", err)
	}
	fmt.Println("stopped")
	// Output:
	// HTTP
	// MQTT
	// Redis
	// stopped
}

func HTTPServiceHandler(conn net.Conn) {
	defer conn.Close()
	conn.Write([]byte("HTTP/1.1 200 OK\r\n\r\nHello from internal service!"))
}

func RedisServiceHandler(conn net.Conn) {
	defer conn.Close()
	conn.Write([]byte("+PONG\r\n"))
}

func SMTPServiceHandler(conn net.Conn) {
	defer conn.Close()
	conn.Write([]byte("220 internal ESMTP\r\n"))
}

func ExampleCreateInternalProtocol() {
	pm := protoplex.NewProtocolManager()
	defer pm.Close()
	check(pm.AddProtocol(protoplex.CreateInternalProtocol(protocols.NewHTTPWebDAVProtocol, HTTPServiceHandler)))
	check(pm.AddProtocol(protoplex.CreateInternalProtocol(protocols.NewRedisProtocol, RedisServiceHandler)))
	check(pm.AddProtocol(protoplex.CreateInternalProtocol(protocols.NewSMTPProtocol, SMTPServiceHandler)))
	for _, p := range pm.Protocols() {
		fmt.Printf("%s served in-process: %v\n", p.Name, p.Handler != nil)
	}
	// Output:
	// HTTP served in-process: true
	// Redis served in-process: true
	// SMTP served in-process: true
}

func NewCustomBinary(target string) *protocols.Protocol {
	return &protocols.Protocol{
		Name:            "CustomBinary",
		Target:          target,
		MatchStartBytes: [][]byte{{0xAA, 0x55}},
		Priority:        7,
		CustomValidator: func(data []byte) bool {
			if len(data) < 4 {
				return false
			}
			length := binary.BigEndian.Uint16(data[2:4])
			return int(length)+4 <= len(data)
		},
	}
}

func Example_customProtocol() {
	pm := protoplex.NewProtocolManager()
	defer pm.Close()
	check(pm.AddProtocol(NewCustomBinary("custom-backend:9000")))
	printProtocols(pm)
	// The validator accepts a frame once its length prefix is covered.
	valid := NewCustomBinary("").CustomValidator
	fmt.Println(valid([]byte{0xAA, 0x55, 0, 2, 'h'}), valid([]byte{0xAA, 0x55, 0, 2, 'h', 'i'}))
	// Output:
	// CustomBinary
	// false true
}

func Example_options() {
	pm := protoplex.NewProtocolManager(
		protoplex.WithMaxConnections(20000),
		protoplex.WithBufferSize(128*1024),
		protoplex.WithIdentifyTimeout(5*time.Second),
		protoplex.WithIdentifyMinBytes(2048),
		protoplex.WithCacheTTL(30*time.Minute),
		protoplex.WithDialTimeout(3*time.Second),
	)
	defer pm.Close()
	httpProtocol := protocols.NewHTTPWebDAVProtocol("192.168.1.5:80")
	httpProtocol.Priority = 1
	check(pm.AddProtocol(httpProtocol))
	redisProtocol := protocols.NewRedisProtocol("redis-cluster:6379,redis-backup:6379")
	check(pm.AddProtocol(redisProtocol))
	for _, p := range pm.Protocols() {
		fmt.Println(p.Name, p.Target)
	}
	metrics := pm.GetMetrics()
	fmt.Printf("活跃连接:%d,连接池效率:%.2f%%,缓存命中率:%.2f%%,限流:%d\n",
		metrics.ActiveConnections,
		float64(metrics.ConnectionPool.ConnectionsReused)/float64(max(metrics.ConnectionPool.ConnectionsCreated, 1))*100,
		metrics.CacheHitRate*100,
		metrics.Security.RateLimitedRequests)
	// Output:
	// HTTP 192.168.1.5:80
	// Redis redis-cluster:6379,redis-backup:6379
	// 活跃连接:0,连接池效率:0.00%,缓存命中率:0.00%,限流:0
}

func Example_configFile() {
	configManager, err := protoplex.NewConfigManager("testdata/config/seed.yaml")
	if err != nil {
		log.Fatal(err)
	}
	defer configManager.Close()
	pm := protoplex.NewProtocolManagerWithConfig(configManager)
	defer pm.Close()
	configManager.OnConfigChange(func(newConfig *protoplex.Config) {
		if err := pm.UpdateConfig(newConfig); err != nil {
			log.Print(err) // the previous configuration keeps serving
		}
	})
	for _, p := range pm.Protocols() {
		fmt.Println(p.Name, p.Target, p.Priority)
	}
	// Output:
	// HTTP web-server:80 1
	// Redis redis-cluster:6379 2
	// MQTT mqtt-broker:1883 3
}

// Example_goAPI is the README's "Go API" sample (TestReadmeGoAPI holds the
// two equal); it binds :9090 and :9091, so it is compiled, not run.
func Example_goAPI() {
	ctx := context.Background()
	pm := protoplex.NewProtocolManager(
		protoplex.WithMaxConnections(20000),
		protoplex.WithIdentifyTimeout(5*time.Second),
	)
	defer pm.Close()
	for _, p := range []*protocols.Protocol{
		protocols.NewHTTPWebDAVProtocol("127.0.0.1:80"),
		protocols.NewRedisProtocol("10.0.0.7:6379,10.0.0.8:6379"), // load-balanced
		protoplex.CreateInternalProtocol(protocols.NewSSHProtocol, func(c net.Conn) {
			defer c.Close() // served in-process; c replays the bytes read during identification
		}),
	} {
		if err := pm.AddProtocol(p); err != nil { // an invalid target or route: nothing was added
			log.Fatal(err)
		}
	}
	// 127.0.0.1:9091; ServeMetrics("0.0.0.0:9091") to open it up. A port in use is an error.
	if err := pm.EnablePrometheusMetrics(9091); err != nil {
		log.Fatal(err)
	}
	if err := pm.RunServer(ctx, ":9090"); err != nil { // returns after ctx is cancelled and the drain finished
		log.Fatal(err)
	}
}

// Example_distributed needs an etcd cluster, so it is compiled, not run.
func Example_distributed() {
	dm, err := protoplex.NewDistributedManager(protoplex.DistributedConfig{
		NodeID:        "protoplex-node-1",
		EtcdEndpoints: []string{"etcd1:2379", "etcd2:2379", "etcd3:2379"},
		ServiceDiscovery: protoplex.ServiceDiscoveryConfig{
			Enable:          true,
			RefreshInterval: 30, // 30秒刷新一次服务列表
		},
		LoadBalancer: protoplex.LoadBalancerConfig{
			Strategy:            "weighted_round_robin",
			HealthCheckInterval: 10, // 10秒健康检查间隔
		},
		ConfigManager: protoplex.ConfigManagerConfig{
			Enable:      true,
			WatchPrefix: "/protoplex/config",
		},
	})
	if err != nil {
		log.Fatal("创建分布式管理器失败:", err)
	}
	defer dm.Close()
	log.Printf("🌐 分布式 Protoplex 启动成功")
	log.Printf("📊 服务发现:已发现 %d 个目标服务", dm.GetServiceCount())
	if err := dm.RunServer(context.Background(), ":9090"); err != nil {
		log.Fatal("启动分布式服务器失败:", err)
	}
}

// readmeGoBlocks returns the ```go blocks of README.md.
func readmeGoBlocks(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, part := range strings.Split(string(data), "```go\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		blocks = append(blocks, block)
	}
	return blocks
}

// TestReadmeGoAPI: README's "Go API" sample is Example_goAPI's body, so it
// compiles; and no Go sample of the README drops the error of a call that
// can fail (AddProtocol, EnablePrometheusMetrics, ServeMetrics, RunServer,
// Start, UpdateConfig): a user copying it would not see a bad target or a
// port in use.
func TestReadmeGoAPI(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(src), "func Example_goAPI() {\n\tctx := context.Background()\n")
	body, _, _ = strings.Cut(body, "\n}\n")
	unindent := func(s string) string {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			out = append(out, strings.TrimPrefix(l, "\t"))
		}
		return strings.Join(out, "\n")
	}
	blocks := readmeGoBlocks(t)
	if !slices.ContainsFunc(blocks, func(b string) bool { return strings.TrimSpace(b) == unindent(body) }) {
		t.Errorf("no Go sample of README.md is Example_goAPI's body:\n%s", unindent(body))
	}
	dropped := regexp.MustCompile(`(?m)^\s*(\w+\.)?(AddProtocol|EnablePrometheusMetrics|ServeMetrics|RunServer|Start|UpdateConfig)\(`)
	for _, b := range blocks {
		for _, m := range dropped.FindAllString(b, -1) {
			t.Errorf("README.md drops the error of %s...): %s", strings.TrimSpace(m), b)
		}
	}
}
