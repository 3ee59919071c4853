package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/testnet"
	"github.com/darkit/protoplex/protocols"
)

// TestByteExactThroughServer: 64 MiB of random bytes each way at once
// through a running protoplex (accept → identify → dial → splice) to a real
// TCP backend; digests must match, and half-close must carry through: the
// backend sees EOF after the client's last byte and still sends its own.
//
// The backend's handler returns, and so closes its conn, only once its own
// write is done: a close while that write still runs cuts the download at
// whatever the backend's kernel had accepted, then sends a FIN, which the
// client reads as a short download ending in a clean EOF. A short download
// is reported with what the backend wrote, so a cut at the backend is told
// apart from bytes lost in forwarding.
func TestByteExactThroughServer(t *testing.T) {
	size := 64 << 20
	if testing.Short() {
		size = 8 << 20
	}
	up := make([]byte, size)
	down := make([]byte, size)
	rand.Read(up)
	copy(up, "SSH-2.0-bulk\r\n") // the first flight routes it
	rand.Read(down)

	type result struct {
		n   int64
		err error
	}
	backendWrote := make(chan result, 1)
	backendRead := make(chan result, 1)
	backendSum := make(chan [32]byte, 1)
	backend := testnet.Serve(t, func(c net.Conn) {
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			n, err := c.Write(down)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			backendWrote <- result{int64(n), err}
		}()
		h := sha256.New()
		n, err := io.Copy(h, c) // returns at the client's half-close, carried through
		<-sent
		backendRead <- result{n, err}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		backendSum <- s
	})

	addr, _ := startMux(t, protocols.NewSSHProtocol(backend))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	go func() {
		c.Write(up)
		c.(*net.TCPConn).CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != int64(size) {
		// The client saw the end of the download, so the backend's write
		// has returned or is failing: its result is at most a close away.
		select {
		case w := <-backendWrote:
			t.Fatalf("client received %d of %d bytes (%v); the backend wrote %d (%v)", n, size, err, w.n, w.err)
		case <-time.After(10 * time.Second):
			t.Fatalf("client received %d of %d bytes (%v); the backend's write still runs", n, size, err)
		}
	}
	var got [32]byte
	copy(got[:], h.Sum(nil))
	if got != sha256.Sum256(down) {
		t.Fatal("backend→client bytes differ")
	}
	if w := <-backendWrote; w.err != nil {
		t.Fatalf("backend wrote %d bytes: %v", w.n, w.err)
	}
	if r := <-backendRead; r.err != nil || r.n != int64(size) {
		t.Fatalf("backend received %d of %d bytes: %v", r.n, size, r.err)
	}
	if s := <-backendSum; s != sha256.Sum256(up) {
		t.Fatal("client→backend bytes differ")
	}
}

// TestHostRoutes: curl with different Host headers reaches different nginx
// servers through one port; the route without conditions takes the rest.
func TestHostRoutes(t *testing.T) {
	a := startNginx(t, "site A", "")
	other := startNginx(t, "default site", "")
	routeA := protocols.NewHTTPProtocol(a)
	routeA.Hosts = []string{"a.example", "*.a.example"}
	addr, _ := startMux(t, protocols.NewHTTPProtocol(other), routeA)
	curl := requireBinary(t, "curl")
	for host, want := range map[string]string{"a.example": "site A", "www.a.example": "site A", "b.example": "default site"} {
		out, err := run(t, 20*time.Second, curl, "-sS", "-H", "Host: "+host, "http://"+addr+"/")
		if err != nil || out != want {
			t.Fatalf("Host %s: %v %q, want %q", host, err, out, want)
		}
	}
}
