package protoplex

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// TestStartFollowsConfigListen: a manager started without addresses serves
// its configuration's server.listen; a reload that moves it binds the new
// address before it is applied, stops the old one without dropping the
// connection that came through it, and a reload whose address cannot be
// bound changes nothing.
func TestStartFollowsConfigListen(t *testing.T) {
	backend := testnet.Echo(t)
	first, second := testnet.FreeAddr(t), testnet.FreeAddr(t)
	conf := func(listen string) *Config {
		c, err := ParseConfig([]byte(fmt.Sprintf("server:\n  listen: %q\nprotocols:\n  - name: SSH\n    target: %q\n", listen, backend)), "t.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pm := NewProtocolManager(WithLogger(discardLogger()), WithGracefulShutdownTimeout(10*time.Second))
	if err := pm.UpdateConfig(conf(first)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); pm.Wait(); pm.Close() }()
	if err := pm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pm.Addrs(); len(got) != 1 || got[0].String() != first {
		t.Fatalf("Addrs %v, want [%s]", got, first)
	}
	// A connection through the first address, mid-stream across the reload.
	c, err := net.DialTimeout("tcp", first, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	echo := func(s string) {
		t.Helper()
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(s))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != s {
			t.Fatalf("echo %q: %q %v", s, buf, err)
		}
	}
	echo("SSH-2.0-before\r\n")

	busy := testnet.Listen(t)
	if err := pm.UpdateConfig(conf(busy.Addr().String())); err == nil {
		t.Fatal("a reload to an address in use was applied")
	}
	if got := pm.Addrs(); len(got) != 1 || got[0].String() != first {
		t.Fatalf("after the rejected reload Addrs %v, want [%s]", got, first)
	}

	if err := pm.UpdateConfig(conf(second)); err != nil {
		t.Fatal(err)
	}
	if got := pm.Addrs(); len(got) != 1 || got[0].String() != second {
		t.Fatalf("after the reload Addrs %v, want [%s]", got, second)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return !testnet.Listening(first) }, "the removed address still accepts")
	if got, err := testnet.RoundTrip(second, "SSH-2.0-new\r\n"); err != nil || got != "SSH-2.0-new\r\n" {
		t.Fatalf("new address: %q %v", got, err)
	}
	echo("SSH-2.0-after\r\n") // the old listener's connection was not dropped
}

// TestStartPinnedAddresses: addresses given to Start stay served whatever
// the configuration's listen says, and Start binds all of them or none.
func TestStartPinnedAddresses(t *testing.T) {
	pm := NewProtocolManager(WithLogger(discardLogger()))
	defer pm.Close()
	if err := pm.AddProtocol(protocols.NewSSHProtocol(testnet.Echo(t))); err != nil {
		t.Fatal(err)
	}
	busy := testnet.Listen(t)
	free := testnet.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); pm.Wait() }()
	if err := pm.Start(ctx, free, busy.Addr().String()); err == nil {
		t.Fatal("Start with an address in use succeeded")
	}
	if testnet.Listening(free) {
		t.Fatal("the failed Start left an address bound")
	}
	if err := pm.Start(ctx, free); err != nil {
		t.Fatal(err)
	}
	if got, err := testnet.RoundTrip(free, "SSH-2.0-x\r\n"); err != nil || got != "SSH-2.0-x\r\n" {
		t.Fatalf("pinned address: %q %v", got, err)
	}
}

// TestServeEndsWhenListenerClosed: closing the listener given to Serve stops
// Serve and frees the port, on both data planes (the event loops watch a
// duplicate of the socket, which must not outlive the caller's Close).
func TestServeEndsWhenListenerClosed(t *testing.T) {
	for _, plane := range []string{"events", "goroutines"} {
		t.Run(plane, func(t *testing.T) {
			pm := NewProtocolManager(WithLogger(discardLogger()), WithDataPlane(plane, 1))
			defer pm.Close()
			if err := pm.AddProtocol(protocols.NewSSHProtocol(testnet.Banner(t, "b:"))); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			done := make(chan error, 1)
			go func() { done <- pm.Serve(context.Background(), ln) }()
			if got := roundTrip(t, addr, "SSH-2.0-x\r\n"); got != "b:SSH-2.0-x\r\n" {
				t.Fatalf("served %q", got)
			}
			ln.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve still running 10s after its listener was closed")
			}
			again, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("port still held after Serve returned: %v", err)
			}
			again.Close()
		})
	}
}
