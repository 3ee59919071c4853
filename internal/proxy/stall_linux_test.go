package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// smallBufPair is a loopback TCP connection whose both ends have 16 KiB
// buffers from before the handshake, so a reader that stops fills the path
// after a few dozen KiB.
func smallBufPair(t testing.TB) (dialed, accepted net.Conn) {
	t.Helper()
	small := func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 16<<10)
		})
	}
	lc := net.ListenConfig{Control: small}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d := net.Dialer{Control: small}
	dialed, err = d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if accepted = <-ch; accepted == nil {
		t.Fatal("accept failed")
	}
	return dialed, accepted
}

func withFd(t testing.TB, c net.Conn, f func(fd int)) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Control(func(fd uintptr) { f(int(fd)) }); err != nil {
		t.Fatal(err)
	}
}

// writable says whether a write on c would not block now.
func writable(t testing.TB, c net.Conn) bool {
	var ok bool
	withFd(t, c, func(fd int) {
		pfd := struct {
			fd             int32
			events, revent int16
		}{fd: int32(fd), events: 0x4} // POLLOUT
		var zero syscall.Timespec
		n, _, _ := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		ok = n == 1 && pfd.revent&0x4 != 0
	})
	return ok
}

// unread is how many received bytes wait in c's socket for a read.
func unread(t testing.TB, c net.Conn) int {
	var n int32
	withFd(t, c, func(fd int) {
		_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	})
	return int(n)
}

// tcpState is the kernel's TCP state of c (tcpi_state: 1 established, 8 close-wait).
func tcpState(t testing.TB, c net.Conn) uint8 {
	var state uint8
	withFd(t, c, func(fd int) {
		var err error
		if state, err = tcpStateOf(fd); err != nil {
			t.Fatal(err)
		}
	})
	return state
}

// waitFor polls cond (the state lives in the kernel, there is no event to
// wait on) for at most 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 10 s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// flood writes to c until a write fails; the returned channel closes then.
func flood(c net.Conn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 16<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	return done
}

func reset(c net.Conn) {
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
}

// stalledForward starts Forward between a flooding sender and a receiver
// that never reads, and returns once Forward's write to the receiver is
// blocked with more of the sender's bytes waiting behind it.
type stalled struct {
	client, pc, pb, backend net.Conn
	fwd                     chan Stats
}

func startStalled(t *testing.T, forward func(client, backend net.Conn) Stats, upload bool) (*stalled, <-chan struct{}) {
	s := &stalled{fwd: make(chan Stats, 1)}
	s.client, s.pc = smallBufPair(t)
	s.pb, s.backend = smallBufPair(t)
	go func() { s.fwd <- forward(s.pc, s.pb) }()
	sender, proxyIn, proxyOut := s.client, s.pc, s.pb
	if !upload {
		sender, proxyIn, proxyOut = s.backend, s.pb, s.pc
	}
	flooding := flood(sender)
	waitFor(t, "blocked writing", func() bool { return !writable(t, proxyOut) && unread(t, proxyIn) > 0 })
	return s, flooding
}

func (s *stalled) close() {
	for _, c := range []net.Conn{s.client, s.pc, s.pb, s.backend} {
		c.Close()
	}
}

func (s *stalled) await(t *testing.T) Stats {
	t.Helper()
	select {
	case st := <-s.fwd:
		return st
	case <-time.After(10 * time.Second):
		s.close()
		<-s.fwd
		t.Fatal("Forward still running 10 s after the peer reset")
		return Stats{}
	}
}

// TestClientResetWhileUploadBlocked: the backend stops reading, the client
// uploads until Forward's write to the backend blocks, then resets. Nothing
// reads the client at that point, yet the pair must end.
func TestClientResetWhileUploadBlocked(t *testing.T) {
	s, flooding := startStalled(t, func(c, b net.Conn) Stats { return Forward(c, b, Options{}) }, true)
	defer s.close()
	reset(s.client)
	<-flooding
	if st := s.await(t); st.Reason != Error {
		t.Fatalf("reason %v, want error", st.Reason)
	}
}

// TestBackendResetWhileDownloadBlocked is the mirror image: the client stops
// reading a download, then the backend resets.
func TestBackendResetWhileDownloadBlocked(t *testing.T) {
	s, flooding := startStalled(t, func(c, b net.Conn) Stats { return Forward(c, b, Options{}) }, false)
	defer s.close()
	reset(s.backend)
	<-flooding
	if st := s.await(t); st.Reason != Error {
		t.Fatalf("reason %v, want error", st.Reason)
	}
}

const fdExhaustedEnv = "PROTOPLEX_PROXY_TEST_FD_EXHAUSTED"

// TestPipeExhaustionKeepsConnection runs, in a child process (so no pipe is
// pooled yet and the fd limit is its own), a byte-exact exchange both ways
// while every fd is taken: no pipe can be created, the bytes must still flow.
func TestPipeExhaustionKeepsConnection(t *testing.T) {
	if os.Getenv(fdExhaustedEnv) == "1" {
		fdExhaustedExchange(t)
		return
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestPipeExhaustionKeepsConnection$",
		"-test.count=1", "-test.v", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), fdExhaustedEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fds exhausted") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func fdExhaustedExchange(t *testing.T) {
	client, pc := tcpPair(t)
	pb, backend := tcpPair(t)
	up, down := randomPayloads(8 << 20)

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(len(entries)) + 16
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fillers []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !strings.Contains(err.Error(), "too many open files") {
				t.Fatal(err)
			}
			break
		}
		fillers = append(fillers, f)
	}
	t.Logf("fds exhausted (%d fillers)", len(fillers))
	defer func() {
		for _, f := range fillers {
			f.Close()
		}
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}()

	fwd := make(chan Stats, 1)
	go func() { fwd <- Forward(pc, pb, Options{}) }()
	exchange(t, client, backend, up, down, nil)
	if st := <-fwd; st.Reason != Done || st.Up != int64(len(up)) || st.Down != int64(len(down)) {
		t.Fatalf("stats %+v", st)
	}
	client.Close()
	backend.Close()
}

// TestClientHalfCloseWhileUploadBlocked: a FIN from the client while its
// upload waits for the backend is no failure: the pair outlives several
// looks at the client and delivers every byte once the backend reads.
func TestClientHalfCloseWhileUploadBlocked(t *testing.T) {
	client, pc := tcpPair(t) // room at the proxy for the client's last bytes and FIN
	defer client.Close()
	u := blockUpload(t, client, pc)
	client.(*net.TCPConn).CloseWrite()
	waitFor(t, "half-closed at the proxy", func() bool { return tcpState(t, pc) == 8 }) // CLOSE_WAIT
	looks := u.p.sourceChecks.Load()
	waitFor(t, "looked at the client", func() bool { return u.p.sourceChecks.Load() >= looks+3 })
	select {
	case st := <-u.fwd:
		t.Fatalf("pair ended on a half-close: %+v", st)
	default:
	}
	u.deliverRest(t, client)
}

// blockedUpload is Forward from a client to a backend that does not read,
// with the client's upload stuck in the proxy's write to the backend.
type blockedUpload struct {
	backend net.Conn
	p       *pair // looks at the client every 10 ms
	fwd     chan Stats
	sent    []byte // what the client sent
}

// blockUpload starts Forward between pc, the proxy's side of client, and a
// backend that does not read, then sends random bytes from client in small
// steps, each read by the proxy before the next, until one stays unread
// through three looks at the client: the proxy's write to the backend is
// then stuck, with room left at the proxy, so what the client sends next (a
// FIN, a last segment) lands there at once rather than queue at the client.
func blockUpload(t *testing.T, client, pc net.Conn) *blockedUpload {
	t.Helper()
	pb, backend := smallBufPair(t)
	t.Cleanup(func() { backend.Close() })
	u := &blockedUpload{backend: backend, p: newPair(0), fwd: make(chan Stats, 1)}
	u.p.blockedCheck = 10 * time.Millisecond
	go func() { u.fwd <- forward(pc, pb, Options{}, u.p) }()

	data := make([]byte, 8<<20)
	rand.Read(data)
	sent := 0
	for stuck := false; !stuck; {
		if sent == len(data) {
			t.Fatal("all sent and the upload never blocked")
		}
		n, err := client.Write(data[sent : sent+1<<10])
		if err != nil {
			t.Fatal(err)
		}
		sent += n
		looks := u.p.sourceChecks.Load()
		waitFor(t, "read or stuck", func() bool {
			stuck = u.p.sourceChecks.Load() >= looks+3
			return stuck || unread(t, pc) == 0
		})
	}
	// Some more, so that what the backend's kernel may still take in after
	// a pause (it compacts its receive queue) does not unblock the proxy.
	n, err := client.Write(data[sent : sent+32<<10])
	if err != nil {
		t.Fatal(err)
	}
	u.sent = data[:sent+n]
	return u
}

// deliverRest lets the backend read the stuck upload, the client having
// half-closed after its last byte: every byte must arrive, then the EOF,
// and the backend's answer must still reach the client before the pair
// ends normally.
func (u *blockedUpload) deliverRest(t *testing.T, client net.Conn) {
	t.Helper()
	got := sha256.New()
	copied, err := io.Copy(got, u.backend) // EOF: the FIN, passed on after the last byte
	if err != nil || copied != int64(len(u.sent)) || !bytes.Equal(got.Sum(nil), sha256Of(u.sent)) {
		t.Fatalf("backend got %d of %d bytes (err %v)", copied, len(u.sent), err)
	}
	u.backend.Write([]byte("answer"))
	u.backend.Close()
	if reply, _ := io.ReadAll(client); string(reply) != "answer" {
		t.Fatalf("client got %q", reply)
	}
	if st := <-u.fwd; st.Reason != Done || st.Up != int64(len(u.sent)) {
		t.Fatalf("stats %+v", st)
	}
}

func sha256Of(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// TestSlowReaderIsNotIdle: a backend that reads slowly but steadily keeps
// the pair alive even when one pipe load takes longer than the idle timeout
// to drain into it: bytes written count as activity, not only bytes read.
func TestSlowReaderIsNotIdle(t *testing.T) {
	client, pc := tcpPair(t)
	pb, backend := smallBufPair(t)
	defer client.Close()
	defer backend.Close()
	fwd := make(chan Stats, 1)
	// 1 MiB, one pipe load, drains at about 400 KB/s: over 2 s, against an
	// idle timeout long enough that a loaded machine not running the reader
	// for a while does not make the pair idle for real.
	go func() { fwd <- Forward(pc, pb, Options{Idle: time.Second}) }()
	data := make([]byte, 1<<20)
	rand.Read(data)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		client.Write(data)
		client.(*net.TCPConn).CloseWrite()
	}()
	h := sha256.New()
	var got int
	buf := make([]byte, 2<<10)
	for {
		n, err := backend.Read(buf)
		h.Write(buf[:n])
		got += n
		if err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond) // a slow consumer's think time, not synchronisation
	}
	<-wrote
	if got != len(data) || !bytes.Equal(h.Sum(nil), sha256Of(data)) {
		t.Fatalf("backend got %d of %d bytes", got, len(data))
	}
	backend.Close()
	if st := <-fwd; st.Reason != Done {
		t.Fatalf("stats %+v", st)
	}
}

// countingPipes makes a pipe per get and closes it on put or drop, so an
// error path that forgets one shows as an open fd; failEvery > 0 makes every
// failEvery-th get fail as at the fd limit.
type countingPipes struct {
	failEvery     int64
	gets, out     atomic.Int64
	puts, dropped atomic.Int64
	mu            sync.Mutex
	inodes        map[uint64]bool // of every pipe made
}

func (c *countingPipes) get() *spipe {
	if n := c.gets.Add(1); c.failEvery > 0 && n%c.failEvery == 0 {
		return nil
	}
	p, err := makePipe()
	if err != nil {
		return nil
	}
	c.out.Add(1)
	c.mu.Lock()
	if c.inodes == nil {
		c.inodes = make(map[uint64]bool)
	}
	c.inodes[pipeInode(p)] = true
	c.mu.Unlock()
	return p
}

func pipeInode(p *spipe) uint64 {
	var st syscall.Stat_t
	_ = syscall.Fstat(p.r, &st)
	return st.Ino
}

func (c *countingPipes) put(p *spipe)  { c.puts.Add(1); c.out.Add(-1); p.close() }
func (c *countingPipes) drop(p *spipe) { c.dropped.Add(1); c.out.Add(-1); p.close() }

// TestPipeFailureFallsBack: pipe creation failing always, or every other
// time, copies through a buffer instead; bytes stay exact both ways and the
// fallbacks are counted.
func TestPipeFailureFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pipes pipeSource
	}{
		{"always EMFILE", &pipePool{newPipe: func() (*spipe, error) { return nil, syscall.EMFILE }}},
		{"every other", &countingPipes{failEvery: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, pc := tcpPair(t)
			pb, backend := tcpPair(t)
			up, down := randomPayloads(8 << 20)
			p := newPair(0)
			p.pipes = tc.pipes
			fwd := make(chan Stats, 1)
			go func() { fwd <- forward(pc, pb, Options{}, p) }()
			exchange(t, client, backend, up, down, nil)
			st := <-fwd
			if st.Reason != Done || st.Up != int64(len(up)) || st.Down != int64(len(down)) || st.PipeFallbacks == 0 {
				t.Fatalf("stats %+v", st)
			}
			client.Close()
			backend.Close()
		})
	}
}

// TestSpliceOutOfMemoryFallsBack: a splice the kernel refuses for want of
// memory (ENOMEM, ENOBUFS) is read through a buffer instead; the connection
// carries on, bytes exact.
func TestSpliceOutOfMemoryFallsBack(t *testing.T) {
	client, pc := tcpPair(t)
	pb, backend := tcpPair(t)
	up, down := randomPayloads(8 << 20)
	var calls atomic.Int64
	p := newPair(0)
	p.spliceIn = func(sock, pipeW int) (int, error) {
		switch calls.Add(1) % 3 {
		case 1:
			return -1, syscall.ENOMEM
		case 2:
			return -1, syscall.ENOBUFS
		}
		return spliceToPipe(sock, pipeW)
	}
	fwd := make(chan Stats, 1)
	go func() { fwd <- forward(pc, pb, Options{}, p) }()
	exchange(t, client, backend, up, down, nil)
	st := <-fwd
	if st.Reason != Done || st.Up != int64(len(up)) || st.Down != int64(len(down)) || st.PipeFallbacks == 0 {
		t.Fatalf("stats %+v", st)
	}
	client.Close()
	backend.Close()
}

// openPipes lists the pipes this process has an fd of, by inode. Pipes
// are matched by inode, not counted: pooled pipes of other tests may be
// closed by their GC cleanup at any time.
func openPipes(t *testing.T) map[uint64]bool {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	pipes := make(map[uint64]bool)
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own fd, gone by now
		}
		if ino, ok := strings.CutPrefix(target, "pipe:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(ino, "]"), 10, 64); err == nil {
				pipes[n] = true
			}
		}
	}
	return pipes
}

// TestNoPipeLeaksOnErrorPaths: every pipe taken is given back or closed,
// on the normal path and when either side fails with bytes still in a pipe
// (written to a peer that reset, or dropped because the source reset while
// its write was blocked).
//
// Each scenario runs twice: with pipes failing at every third get, so that
// pipes and buffers mix, and with pipes that never fail. A pipe is taken
// per read, so whether a stalled write holds a pipe or a buffer under the
// first source depends on how many reads came before; only the second
// makes every blocked write hold one, so that a pipe put back instead of
// dropped is always seen.
func TestNoPipeLeaksOnErrorPaths(t *testing.T) {
	mixed, steady := &countingPipes{failEvery: 3}, &countingPipes{}
	for _, pipes := range []*countingPipes{mixed, steady} {
		pairWith := func() *pair {
			p := newPair(0)
			p.pipes = pipes
			p.blockedCheck = 10 * time.Millisecond
			return p
		}
		fwd := func(c, b net.Conn) Stats { return forward(c, b, Options{}, pairWith()) }

		client, pc := tcpPair(t)
		pb, backend := tcpPair(t)
		done := make(chan Stats, 1)
		go func() { done <- fwd(pc, pb) }()
		data := make([]byte, 4<<20)
		rand.Read(data)
		exchange(t, client, backend, data, data, nil)
		<-done
		client.Close()
		backend.Close()

		for _, tc := range []struct {
			name   string
			upload bool
			fail   func(s *stalled) net.Conn // the end that resets
		}{
			{"client resets, upload blocked", true, func(s *stalled) net.Conn { return s.client }},
			{"backend resets, upload blocked", true, func(s *stalled) net.Conn { return s.backend }},
			{"backend resets, download blocked", false, func(s *stalled) net.Conn { return s.backend }},
			{"client resets, download blocked", false, func(s *stalled) net.Conn { return s.client }},
		} {
			s, flooding := startStalled(t, fwd, tc.upload)
			reset(tc.fail(s))
			if st := s.await(t); st.Reason != Error {
				t.Errorf("%s (fail every %d): reason %v", tc.name, pipes.failEvery, st.Reason)
			}
			s.close()
			<-flooding
		}
		if out := pipes.out.Load(); out != 0 {
			t.Fatalf("fail every %d: %d pipes neither put back nor dropped (gets %d, puts %d, drops %d)", pipes.failEvery, out, pipes.gets.Load(), pipes.puts.Load(), pipes.dropped.Load())
		}
	}
	if steady.dropped.Load() == 0 {
		t.Fatal("no scenario dropped a pipe holding bytes")
	}
	open := openPipes(t)
	for _, pipes := range []*countingPipes{mixed, steady} {
		for ino := range pipes.inodes {
			if open[ino] {
				t.Errorf("pipe %d still open", ino)
			}
		}
	}
}

// TestPipePoolDropClosesAtOnce: a dropped pipe's fds are closed when it is
// dropped, not at some later GC: under fd pressure they are wanted now.
func TestPipePoolDropClosesAtOnce(t *testing.T) {
	pool := &pipePool{newPipe: makePipe}
	p := pool.get()
	if p == nil {
		t.Fatal("no pipe")
	}
	ino := pipeInode(p)
	if !openPipes(t)[ino] {
		t.Fatal("pipe not listed as open")
	}
	pool.drop(p)
	if openPipes(t)[ino] {
		t.Fatal("pipe still open after drop")
	}
}
