package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

// TestForwardByteExactBothWays sends 64 MiB of random bytes each way at the
// same time through Forward, with a replayed prefix, and checks digests and
// half-close propagation (each side sees EOF only after all bytes).
func TestForwardByteExactBothWays(t *testing.T) {
	size := 64 << 20
	if testing.Short() {
		size = 4 << 20
	}
	client, proxyClientSide := tcpPair(t)
	proxyBackendSide, backend := tcpPair(t)
	up, down := randomPayloads(size)
	replay := up[:1000]

	fwd := make(chan Stats, 1)
	go func() { fwd <- Forward(proxyClientSide, proxyBackendSide, Options{Replay: replay, Idle: time.Minute}) }()

	exchange(t, client, backend, up[1000:], down, up)
	st := <-fwd
	if st.Up != int64(size) || st.Down != int64(size) || st.Reason != Done {
		t.Fatalf("stats %+v", st)
	}
	client.Close()
	backend.Close()
}

// exchange sends up from client and down from backend at the same time, each
// followed by a half-close, and checks each side receives the other's bytes
// exactly (wantUp, when not nil, is what the backend must see: the replayed
// prefix plus up).
func exchange(t testing.TB, client, backend net.Conn, up, down, wantUp []byte) {
	t.Helper()
	if wantUp == nil {
		wantUp = up
	}
	type result struct {
		sum [32]byte
		n   int64
	}
	recv := func(c net.Conn, out chan<- result) {
		h := sha256.New()
		n, _ := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n = n
		out <- r
	}
	backendGot, clientGot := make(chan result, 1), make(chan result, 1)
	go recv(backend, backendGot)
	go recv(client, clientGot)
	send := func(c net.Conn, data []byte) {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite() // half-close: the other direction continues
	}
	go send(client, up)
	go send(backend, down)

	b, c := <-backendGot, <-clientGot
	if b.n != int64(len(wantUp)) || b.sum != sha256.Sum256(wantUp) {
		t.Fatalf("backend got %d of %d bytes, digest match %v", b.n, len(wantUp), b.sum == sha256.Sum256(wantUp))
	}
	if c.n != int64(len(down)) || c.sum != sha256.Sum256(down) {
		t.Fatalf("client got %d of %d bytes, digest match %v", c.n, len(down), c.sum == sha256.Sum256(down))
	}
}

// TestHalfCloseKeepsOtherDirection: the client finishes sending, the backend
// still answers afterwards (like `nc -q` or an HTTP/1.0 client).
func TestHalfCloseKeepsOtherDirection(t *testing.T) {
	client, pc := tcpPair(t)
	pb, backend := tcpPair(t)
	done := make(chan Stats, 1)
	go func() { done <- Forward(pc, pb, Options{}) }()
	client.Write([]byte("question"))
	client.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(backend) // ends at the propagated half-close
	if string(got) != "question" {
		t.Fatalf("backend got %q", got)
	}
	backend.Write([]byte("answer after half-close"))
	backend.Close()
	reply, _ := io.ReadAll(client)
	if string(reply) != "answer after half-close" {
		t.Fatalf("client got %q", reply)
	}
	client.Close()
	if st := <-done; st.Reason != Done {
		t.Fatalf("reason %v", st.Reason)
	}
}

func TestIdleTimeoutClosesBoth(t *testing.T) {
	client, pc := tcpPair(t)
	pb, backend := tcpPair(t)
	done := make(chan Stats, 1)
	// The think time is far below the idle timeout, so a loaded machine
	// pausing this goroutine does not make the pair idle for real.
	go func() { done <- Forward(pc, pb, Options{Idle: 500 * time.Millisecond}) }()
	// Activity keeps it open past several idle periods...
	for i := 0; i < 30; i++ {
		client.Write([]byte("x"))
		buf := make([]byte, 1)
		if _, err := io.ReadFull(backend, buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(40 * time.Millisecond) // simulated think time, not synchronisation
	}
	// ...then silence closes it.
	st := <-done
	if st.Reason != IdleTimeout || st.Up != 30 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client still open")
	}
	client.Close()
	backend.Close()
}

// TestReplayReleasedBeforeCopy: Forward writes the replay first and is done
// with it before the connection idles: ReplayDone comes while the client is
// still silent, and what the caller then writes into the replay's buffer
// never reaches the backend.
func TestReplayReleasedBeforeCopy(t *testing.T) {
	client, pc := tcpPair(t)
	pb, backend := tcpPair(t)
	defer client.Close()
	defer backend.Close()
	buf := []byte("hello ")
	released := make(chan struct{}, 2)
	fwd := make(chan Stats, 1)
	go func() {
		fwd <- Forward(pc, pb, Options{Replay: buf, ReplayTimeout: time.Minute, ReplayDone: func() {
			copy(buf, "XXXXXX") // the buffer is reused at once
			released <- struct{}{}
		}})
	}()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("replay not released while the client is silent")
	}
	client.Write([]byte("world"))
	client.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(backend)
	if string(got) != "hello world" {
		t.Fatalf("backend got %q", got)
	}
	backend.Close()
	if st := <-fwd; st.Up != 11 || st.Reason != Done {
		t.Fatalf("stats %+v", st)
	}
	if len(released) != 0 {
		t.Fatal("ReplayDone called more than once")
	}
}

// TestReplayWriteBounded: a backend that never reads fails the replay write
// at ReplayTimeout: both conns are closed, reason Error, the replay
// released.
func TestReplayWriteBounded(t *testing.T) {
	client, pc := tcpPair(t)
	defer client.Close()
	pb, backend := net.Pipe() // unbuffered: a write blocks until read, and nothing reads
	defer backend.Close()
	released := make(chan struct{}, 1)
	fwd := make(chan Stats, 1)
	go func() {
		fwd <- Forward(pc, pb, Options{Replay: []byte("hello"), ReplayTimeout: 50 * time.Millisecond,
			ReplayDone: func() { released <- struct{}{} }})
	}()
	select {
	case st := <-fwd:
		if st.Reason != Error || st.Up != 0 {
			t.Fatalf("stats %+v", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("replay write to a backend that never reads not bounded")
	}
	if len(released) != 1 {
		t.Fatal("replay not released")
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client conn not closed: %d %v", n, err)
	}
}

// TestReplayDoneWithoutReplay: ReplayDone is called when there is nothing
// to replay too, so a caller releases its buffer on one path.
func TestReplayDoneWithoutReplay(t *testing.T) {
	client, pc := tcpPair(t)
	pb, backend := tcpPair(t)
	released := make(chan struct{}, 1)
	fwd := make(chan Stats, 1)
	go func() { fwd <- Forward(pc, pb, Options{ReplayDone: func() { released <- struct{}{} }}) }()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("ReplayDone not called")
	}
	client.Close()
	backend.Close()
	<-fwd
}

func TestReplayConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	rc := NewReplayConn(b, []byte("hello "))
	go func() { a.Write([]byte("world")); a.Close() }()
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, []byte("hello world")) {
		t.Fatalf("got %q", got)
	}
	rc.Close()
}

func BenchmarkForwardThroughput(b *testing.B) {
	client, pc := tcpPair(b)
	pb, backend := tcpPair(b)
	go Forward(pc, pb, Options{})
	benchStream(b, client, backend)
	client.Close()
	backend.Close()
}

func BenchmarkDirectThroughput(b *testing.B) {
	client, backend := tcpPair(b)
	benchStream(b, client, backend)
	client.Close()
	backend.Close()
}

func benchStream(b *testing.B, w, r net.Conn) {
	chunk := make([]byte, 256<<10)
	b.SetBytes(int64(len(chunk)))
	done := make(chan struct{})
	go func() {
		io.CopyN(io.Discard, r, int64(b.N)*int64(len(chunk)))
		close(done)
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Write(chunk)
	}
	<-done
}

// randomPayloads returns two random buffers of size bytes, one for each
// direction of a byte-exact exchange.
func randomPayloads(size int) (up, down []byte) {
	up, down = make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)
	return up, down
}
