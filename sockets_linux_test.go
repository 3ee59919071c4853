package protoplex

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestSocketsHandOver: a manager's Sockets (TCP and Unix listeners, the
// UDP listener, the metrics port) taken by a second manager through
// WithInheritedSockets: it serves the same addresses, configured as port
// 0, without binding; once the first says it handed them over and closes,
// the Unix socket file stays and the second serves it.
func TestSocketsHandOver(t *testing.T) {
	backend := testnet.Banner(t, "A:")
	sock := filepath.Join(t.TempDir(), "p.sock")
	cfg, err := ParseConfig([]byte(fmt.Sprintf("server:\n  listen: [\"127.0.0.1:0\", \"unix:%s\"]\n  listen_udp: \"127.0.0.1:0\"\nprotocols:\n  - name: SSH\n    target: %q\n", sock, backend)), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	start := func(opts ...Option) (*ProtocolManager, func()) {
		pm := NewProtocolManager(append([]Option{WithLogger(discardLogger()), WithGracefulShutdownTimeout(10 * time.Second)}, opts...)...)
		if err := pm.UpdateConfig(cfg); err != nil {
			t.Fatal(err)
		}
		if err := pm.ServeMetrics("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := pm.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return pm, func() { cancel(); pm.Wait(); pm.Close() }
	}
	addrs := func(pm *ProtocolManager) []string {
		var out []string
		for _, a := range pm.Addrs() {
			out = append(out, a.String())
		}
		return append(out, pm.MetricsAddr())
	}
	old, stopOld := start()
	socks, err := old.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*os.File{}
	var keys []string
	for _, s := range socks {
		files[s.Key] = os.NewFile(uintptr(s.FD), s.Key)
		keys = append(keys, s.Key+" "+s.Network)
	}
	slices.Sort(keys)
	want := []string{"listen 127.0.0.1:0 tcp", "listen unix:" + sock + " unix", "listen_udp 127.0.0.1:0 udp", "metrics 127.0.0.1:0 tcp"}
	if !slices.Equal(keys, want) {
		t.Fatalf("Sockets: %v, want %v", keys, want)
	}
	next, stopNext := start(WithInheritedSockets(files))
	defer stopNext()
	for _, f := range files {
		f.Close() // the manager took duplicates
	}
	if got, want := addrs(next), addrs(old); !slices.Equal(got, want) {
		t.Errorf("the second manager serves %v, the first %v", got, want)
	}
	if left := next.InheritedLeft(); len(left) != 0 {
		t.Errorf("not taken: %v", left)
	}
	old.SocketsHandedOver()
	stopOld()
	for _, network := range []string{"unix", "tcp"} {
		addr := sock
		if network == "tcp" {
			addr = next.Addrs()[0].String()
		}
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		if err != nil {
			t.Fatalf("%s after the first manager closed: %v", network, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "SSH-2.0-x\r\n")
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Close()
		if string(buf[:n]) != "A:SSH-2.0-x\r\n" {
			t.Errorf("%s through the second manager: %q", network, buf[:n])
		}
	}
}
