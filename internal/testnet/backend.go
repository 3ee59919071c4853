package testnet

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
)

// Fake backends. Each serves every connection until the client half-closes
// it (or the test ends) and returns its address; they end the connection
// then, so a client's RoundTrip returns as soon as it has the whole reply.

// Echo returns a backend that sends back every byte it receives.
func Echo(tb testing.TB) string {
	tb.Helper()
	return Serve(tb, func(c net.Conn) {
		io.Copy(c, c)
		closeWrite(c)
	})
}

// Banner returns a backend that answers the first line it receives with
// prefix+line, then echoes the rest: which backend served a connection, and
// that its first flight arrived whole, show in the reply.
func Banner(tb testing.TB, prefix string) string {
	tb.Helper()
	return Serve(tb, func(c net.Conn) {
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, prefix+line); err != nil {
			return
		}
		io.Copy(c, r)
		closeWrite(c)
	})
}

// Recorder is a backend that answers every connection with a fixed reply
// and keeps what each connection sent.
type Recorder struct {
	Addr string // the backend's address

	mu       sync.Mutex
	accepted int
	received []string
	arrived  chan struct{}
}

// Record returns a Recorder: it sends reply on accepting a connection,
// then reads until the client half-closes or closes it.
func Record(tb testing.TB, reply string) *Recorder {
	tb.Helper()
	r := &Recorder{arrived: make(chan struct{}, 1<<10)}
	r.Addr = Serve(tb, func(c net.Conn) {
		r.mu.Lock()
		r.accepted++
		r.mu.Unlock()
		select {
		case r.arrived <- struct{}{}:
		default:
		}
		io.WriteString(c, reply)
		b, _ := io.ReadAll(c)
		r.mu.Lock()
		r.received = append(r.received, string(b))
		r.mu.Unlock()
	})
	return r
}

// Accepted is how many connections the backend accepted.
func (r *Recorder) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// Received returns what each ended connection sent, in the order they
// ended.
func (r *Recorder) Received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.received...)
}

// Arrived receives a value for every accepted connection (up to 1,024 not
// yet received), to wait for a connection without polling.
func (r *Recorder) Arrived() <-chan struct{} { return r.arrived }
