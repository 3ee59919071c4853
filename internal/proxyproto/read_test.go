package proxyproto

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns both ends of a real loopback connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

type readResult struct {
	h    Header
	rest int
	err  error
}

// readAsync runs Read on server; the result arrives on the channel.
func readAsync(server net.Conn, buf []byte, timeout time.Duration) <-chan readResult {
	done := make(chan readResult, 1)
	go func() {
		h, rest, err := Read(server, buf, timeout)
		done <- readResult{h, rest, err}
	}()
	return done
}

// TestReadRefusesWhatCannotFit: a header that announces (v2) or runs (v1)
// longer than allowed is refused as soon as that is known, not at the
// deadline nor after filling the buffer; the client keeps the connection
// open and silent meanwhile.
func TestReadRefusesWhatCannotFit(t *testing.T) {
	h := AppendV2(nil, Header{Source: src4, Dest: dst4})
	for name, send := range map[string][]byte{
		"v2 length 65535":           append(append([]byte(nil), h[:14]...), 0xFF, 0xFF),
		"v2 longer than the buffer": append(append([]byte(nil), h[:14]...), 0x10, 0x00),
		"v1 over 107 bytes":         []byte("PROXY TCP4 192.0.2.1" + strings.Repeat(" ", 100)),
	} {
		t.Run(name, func(t *testing.T) {
			client, server := tcpPair(t)
			if _, err := client.Write(send); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-readAsync(server, make([]byte, 4096), time.Minute):
				if !errors.Is(r.err, ErrInvalid) {
					t.Fatalf("got %+v, want ErrInvalid", r)
				}
			case <-time.After(10 * time.Second): // far below the one-minute deadline
				client.Close()
				t.Fatal("still waiting for the rest of a header that cannot fit")
			}
		})
	}
}

// TestReadKeepsWhatFollows: a header split from what follows, in segments
// split at every offset, is consumed, and the client's first bytes are
// moved to the start of the buffer.
func TestReadKeepsWhatFollows(t *testing.T) {
	hdr := Header{Source: src4, Dest: dst4}
	for name, h := range map[string][]byte{"v1": AppendV1(nil, hdr), "v2": AppendV2(nil, hdr)} {
		stream := append(h, "SSH-2.0-x\r\n"...)
		for cut := 1; cut < len(stream); cut++ {
			client, server := tcpPair(t)
			buf := make([]byte, 4096)
			done := readAsync(server, buf, 10*time.Second)
			client.Write(stream[:cut])
			if cut < len(h) {
				// The header is not whole: Read must still be waiting.
				select {
				case r := <-done:
					t.Fatalf("%s cut %d: returned %+v before the header was whole", name, cut, r)
				default:
				}
			}
			client.Write(stream[cut:])
			r := <-done
			// The rest may arrive in the same read as the header or not.
			if r.err != nil || r.h != hdr || !strings.HasPrefix("SSH-2.0-x\r\n", string(buf[:r.rest])) {
				t.Fatalf("%s cut %d: %+v %q", name, cut, r, buf[:r.rest])
			}
			client.Close()
			server.Close()
		}
	}
}

func TestReadFailures(t *testing.T) {
	t.Run("not a header", func(t *testing.T) {
		client, server := tcpPair(t)
		client.Write([]byte("GET / HTTP/1.1\r\n"))
		if r := <-readAsync(server, make([]byte, 4096), 10*time.Second); !errors.Is(r.err, ErrNotProxy) {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("closed mid-header", func(t *testing.T) {
		client, server := tcpPair(t)
		client.Write([]byte("PROXY TCP4 192.0.2.1"))
		client.Close()
		if r := <-readAsync(server, make([]byte, 4096), 10*time.Second); !errors.Is(r.err, io.EOF) {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		client, server := tcpPair(t)
		client.Write([]byte("PROXY "))
		r := <-readAsync(server, make([]byte, 4096), 50*time.Millisecond)
		if !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("%+v", r)
		}
		// The deadline is cleared: the conn is usable afterwards.
		client.Write([]byte("x"))
		if _, err := server.Read(make([]byte, 64)); err != nil {
			t.Fatalf("read after Read: %v", err)
		}
	})
	t.Run("buffer full", func(t *testing.T) {
		client, server := tcpPair(t)
		client.Write([]byte("PROXY TCP4 1.2.3.4")) // incomplete, longer than the buffer
		if r := <-readAsync(server, make([]byte, 8), 10*time.Second); !errors.Is(r.err, ErrInvalid) {
			t.Fatalf("%+v", r)
		}
	})
}
