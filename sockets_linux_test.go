package protoplex

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
)

// acceptedAt is protoplex_connections_accepted_total as the metrics port
// at addr answers it.
func acceptedAt(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // a new connection each: accepted by either process
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "protoplex_connections_accepted_total "); ok {
			return v
		}
	}
	return "?"
}

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
	if got, _ := testnet.RoundTrip(old.Addrs()[0].String(), "SSH-2.0-x\r\n"); got != "A:SSH-2.0-x\r\n" {
		t.Fatalf("through the first manager: %q", got)
	}
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
	want := []string{"listen 127.0.0.1:0 tcp", "listen unix:" + sock + " unix", "listen_udp 127.0.0.1:0 udp", "metrics 127.0.0.1:0 tcp"}
	// Every SO_REUSEPORT socket of the UDP address, in order.
	for i := 1; i < len(socks)-3; i++ {
		want = append(want, fmt.Sprintf("listen_udp 127.0.0.1:0 #%d udp", i))
	}
	slices.Sort(keys)
	slices.Sort(want)
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
	metricsAddr := old.MetricsAddr()
	old.SocketsHandedOver()
	if a := old.MetricsAddr(); a != "" {
		t.Errorf("the first manager still serves metrics on %s after handing them over", a)
	}
	for range 20 { // each scrape is the second manager's (0 accepted): the first (1) no longer accepts there
		if v := acceptedAt(t, metricsAddr); v != "0" {
			t.Fatalf("a scrape after the handover reached the first manager (accepted %s)", v)
		}
	}
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
