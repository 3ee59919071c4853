package protoplex_test

// The seed's samples, compiled as examples: users copy them, so they must
// keep compiling with only the import path changed.

import (
	"context"
	"encoding/binary"
	"log"
	"net"
	"time"

	"github.com/darkit/protoplex"
	"github.com/darkit/protoplex/protocols"
)

func Example_quickStart() {
	pm := protoplex.NewProtocolManager()
	defer pm.Close()
	pm.AddProtocol(protocols.NewHTTPWebDAVProtocol("192.168.1.5:80"))
	pm.AddProtocol(protocols.NewRedisProtocol("192.168.1.6:6379"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the sample blocks in RunServer; here it returns at once
	if err := pm.RunServer(ctx, "127.0.0.1:0"); err != nil {
		log.Fatal("启动失败:", err)
	}
	// Output:
}

func HTTPServiceHandler(conn net.Conn) {
	defer conn.Close()
	conn.Write([]byte("HTTP/1.1 200 OK\r\n\r\nHello from internal service!"))
}

func RedisServiceHandler(conn net.Conn) {
	defer conn.Close()
	conn.Write([]byte("+PONG\r\n"))
}

func ExampleCreateInternalProtocol() {
	pm := protoplex.NewProtocolManager()
	defer pm.Close()
	pm.AddProtocol(protoplex.CreateInternalProtocol(protocols.NewHTTPWebDAVProtocol, HTTPServiceHandler))
	pm.AddProtocol(protoplex.CreateInternalProtocol(protocols.NewRedisProtocol, RedisServiceHandler))
	// Output:
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
	pm.AddProtocol(NewCustomBinary("custom-backend:9000"))
	// Output:
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
	pm.AddProtocol(httpProtocol)
	redisProtocol := protocols.NewRedisProtocol("redis-cluster:6379,redis-backup:6379")
	pm.AddProtocol(redisProtocol)
	metrics := pm.GetMetrics()
	_ = metrics.ActiveConnections
	_ = float64(metrics.ConnectionPool.ConnectionsReused) / float64(max(metrics.ConnectionPool.ConnectionsCreated, 1)) * 100
	_ = metrics.CacheHitRate * 100
	_ = metrics.Security.RateLimitedRequests
	// Output:
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
		pm.UpdateConfig(newConfig)
	})
	// Output:
}
