package protoplex

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/internal/udp/udptest"
)

// udpConfig is a configuration whose UDP route takes datagrams starting
// "id" to echo, on the listen_udp addresses udp.
func udpConfig(t *testing.T, echo string, udp ...string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(fmt.Sprintf("server:\n  listen_udp: [\"%s\"]\nprotocols:\n  - name: mine\n    transport: udp\n    match_start_bytes: [\"6964\"]\n    target: %q\n",
		strings.Join(udp, `", "`), echo)), "u.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// udpAnswers reports whether a datagram to addr comes back through the
// route.
func udpAnswers(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("id-ping"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second)) // a lost datagram fails, never hangs
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == "id-ping"
}

func udpBindable(addr string) bool {
	pc, err := net.ListenPacket("udp", addr)
	if err == nil {
		pc.Close()
	}
	return err == nil
}

// TestStartUDPRebinds: StartUDP serves listen_udp, an inherited socket as
// the entry naming its address (here by host name), and UpdateConfig
// rebinds it: a busy address rejects the update with nothing changed, an
// added one is served while a flow on a kept one goes on, a removed one is
// released.
func TestStartUDPRebinds(t *testing.T) {
	echo := udptest.Echo(t, false)
	inherited, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	passed := inherited.LocalAddr().String()
	named := "localhost:" + passed[strings.LastIndexByte(passed, ':')+1:]
	bound, added := testnet.FreeAddr(t), testnet.FreeAddr(t)
	pm := NewProtocolManager(WithLogger(discardLogger()))
	if err := pm.UpdateConfig(udpConfig(t, echo, named, bound)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); pm.Close(); pm.Wait() })
	if err := pm.StartUDP(ctx, inherited); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{passed, bound} {
		if !udpAnswers(t, a) {
			t.Fatalf("%s not served; Addrs %v", a, pm.Addrs())
		}
	}
	// A flow that lives across the updates that keep its listener.
	flow, err := net.Dial("udp", bound)
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	exchange := func(when string) {
		t.Helper()
		flow.Write([]byte("id-" + when))
		flow.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		if n, err := flow.Read(buf); err != nil || string(buf[:n]) != "id-"+when {
			t.Fatalf("the flow to %s %s: %q %v", bound, when, buf[:n], err)
		}
	}
	exchange("before")

	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = pm.UpdateConfig(udpConfig(t, echo, added, busy.LocalAddr().String()))
	if err == nil || !strings.Contains(err.Error(), "server.listen_udp") {
		t.Fatalf("update with a busy listen_udp address: %v", err)
	}
	if !udpBindable(added) {
		t.Fatalf("%s stayed bound after the rejected update", added)
	}
	for _, a := range []string{passed, bound} {
		if !udpAnswers(t, a) {
			t.Fatalf("%s not served after the rejected update", a)
		}
	}

	exchange("after the rejected update")
	if err := pm.UpdateConfig(udpConfig(t, echo, bound, added)); err != nil {
		t.Fatal(err)
	}
	if !udpAnswers(t, added) {
		t.Fatalf("the added %s not served", added)
	}
	exchange("after an update that keeps its listener")
	if flows := pm.udp.Flows(); flows < 1 {
		t.Fatalf("%d UDP flows", flows)
	}
	if err := pm.UpdateConfig(udpConfig(t, echo, added)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return udpBindable(passed) && udpBindable(bound) },
		"the removed listen_udp sockets stayed open")
	if got := pm.Addrs(); len(got) != 1 || got[0].String() != added {
		t.Fatalf("Addrs %v, want [%s]", got, added)
	}
}

// TestStartUDPRefusesUnnamedSocket: an inherited socket that no listen_udp
// entry names fails StartUDP, and is closed.
func TestStartUDPRefusesUnnamedSocket(t *testing.T) {
	echo := udptest.Echo(t, false)
	inherited, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pm := NewProtocolManager(WithLogger(discardLogger()))
	t.Cleanup(func() { pm.Close(); pm.Wait() })
	if err := pm.UpdateConfig(udpConfig(t, echo, testnet.FreeAddr(t))); err != nil {
		t.Fatal(err)
	}
	err = pm.StartUDP(context.Background(), inherited)
	if err == nil || !strings.Contains(err.Error(), "no server.listen_udp address names") {
		t.Fatalf("StartUDP with an unnamed socket: %v", err)
	}
	if !udpBindable(inherited.LocalAddr().String()) {
		t.Fatal("the refused socket was left open")
	}
	if got := pm.Addrs(); len(got) != 0 {
		t.Fatalf("serving %v after the refusal", got)
	}
}

// TestStartBindsAllOrNothing: when a TCP address cannot be bound, Start
// serves nothing, and the listen_udp address it bound is released.
func TestStartBindsAllOrNothing(t *testing.T) {
	echo := udptest.Echo(t, false)
	busy := testnet.Listen(t)
	defer busy.Close()
	udpAddr := testnet.FreeAddr(t)
	pm := NewProtocolManager(WithLogger(discardLogger()))
	t.Cleanup(func() { pm.Close(); pm.Wait() })
	if err := pm.UpdateConfig(udpConfig(t, echo, udpAddr)); err != nil {
		t.Fatal(err)
	}
	err := pm.Start(context.Background(), busy.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "server.listen") {
		t.Fatalf("Start on a busy TCP address: %v", err)
	}
	if !udpBindable(udpAddr) {
		t.Fatalf("listen_udp %s stayed bound after Start failed", udpAddr)
	}
	if got := pm.Addrs(); len(got) != 0 {
		t.Fatalf("serving %v after Start failed", got)
	}
}
