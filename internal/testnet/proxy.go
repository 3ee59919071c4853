package testnet

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections to a target, and Cut cuts them: it closes
// every forwarded connection and refuses new ones (accepted, then closed at
// once) until Restore. It stands for a network partition between one
// client and its server, the server itself staying up.
type Proxy struct {
	Addr string

	cut  atomic.Bool
	mu   sync.Mutex
	open map[net.Conn]struct{}
}

// CutProxy starts a Proxy to target on a loopback port; it stops when the
// test ends.
func CutProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p := &Proxy{open: map[net.Conn]struct{}{}}
	p.Addr = Serve(tb, func(c net.Conn) {
		if p.cut.Load() {
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		if !p.track(c, up) {
			return
		}
		defer p.untrack(c, up)
		done := make(chan struct{})
		go func() { io.Copy(up, c); up.Close(); close(done) }()
		io.Copy(c, up)
		c.Close()
		<-done
	})
	return p
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut.Load() {
		return false
	}
	for _, c := range cs {
		p.open[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.open, c)
	}
}

// Cut closes every forwarded connection and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut.Store(true)
	for c := range p.open {
		c.Close()
	}
}

// Restore forwards new connections again.
func (p *Proxy) Restore() { p.cut.Store(false) }
