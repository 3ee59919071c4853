// Command recorder captures what a real client sends first to a peer that
// never answers. It listens on 127.0.0.1, runs a client command pointed at
// that port (or, over TCP, dials itself with Go's crypto/tls) and writes what
// arrives:
//
//   - over TCP (the default), the bytes the client sent before it went quiet
//     for -idle: its first flight;
//   - with -udp, the first datagram, or with -n N the first N datagrams to
//     F with -1, -2, ... before its extension (a ClientHello fragmented over
//     datagrams). The client then retries or gives up.
//
// Used by ../record.sh, ../record-datagrams.sh and ../record-quic.sh; it
// lives under testdata so ./... ignores it.
//
//	go run ./protocols/testdata/recorder -out F [-idle 500ms] -- cmd args...   ({port} is replaced)
//	go run ./protocols/testdata/recorder -out F -gotls example.com
//	go run ./protocols/testdata/recorder -udp -out F [-n N] -- cmd args...
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const usage = "usage: recorder [-udp [-n N]] -out FILE [-wait D] [-idle D] (-gotls NAME | -- cmd args...)"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "recorder:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "", "file to write the first flight or datagram to")
	udp := flag.Bool("udp", false, "listen on UDP and write the client's first datagrams instead of its first TCP flight")
	count := flag.Int("n", 1, "with -udp, how many datagrams to write")
	wait := flag.Duration("wait", 10*time.Second, "how long to wait for the client's connection or first datagram")
	idle := flag.Duration("idle", 500*time.Millisecond, "over TCP, the flight ends after the client is quiet this long")
	goTLS := flag.String("gotls", "", "over TCP, dial with Go's crypto/tls using this server name instead of running a command")
	flag.Parse()
	if *out == "" || *count < 1 || (*goTLS == "" && flag.NArg() == 0) ||
		(*udp && *goTLS != "") || (!*udp && *count != 1) {
		return errors.New(usage)
	}

	addr, record, closeListener, err := listen(*udp, *out, *count, *wait, *idle)
	if err != nil {
		return err
	}
	defer closeListener()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), *wait+10*time.Second)
	defer cancel()
	var clientDone <-chan error
	if *goTLS != "" {
		clientDone = dialGoTLS(ctx, addr, *goTLS)
	} else if clientDone, err = startCommand(ctx, flag.Args(), port); err != nil {
		return err
	}

	err = record()
	cancel() // stops the client
	<-clientDone
	return err
}

// listen opens the socket the client is pointed at, a UDP one with udp set,
// and returns its address, the function that records what arrives on it,
// and the function that closes it.
func listen(udp bool, out string, count int, wait, idle time.Duration) (addr string, record, closeSocket func() error, err error) {
	if udp {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", nil, nil, err
		}
		return pc.LocalAddr().String(), func() error { return recordDatagrams(pc, out, count, wait) }, pc.Close, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	return ln.Addr().String(), func() error { return recordFlight(ln, out, wait, idle) }, ln.Close, nil
}

// startCommand runs args with {port} replaced by port. The command is
// killed, with every process it started, when ctx ends; the channel reports
// its exit.
func startCommand(ctx context.Context, args []string, port string) (<-chan error, error) {
	args = append([]string(nil), args...)
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{port}", port)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	// Wrappers such as sh -c and xvfb-run start the client as a grandchild.
	killProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done, nil
}

// dialGoTLS starts a crypto/tls handshake with addr, offering h2 and
// http/1.1; the channel reports its end, which comes when ctx ends because
// the recorder never answers.
func dialGoTLS(ctx context.Context, addr, serverName string) <-chan error {
	done := make(chan error, 1)
	go func() {
		d := tls.Dialer{Config: &tls.Config{ServerName: serverName, NextProtos: []string{"h2", "http/1.1"}, InsecureSkipVerify: true}}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	return done
}

// recordFlight accepts one connection within wait and writes to out what it
// reads until the client is quiet for idle, closes, or has sent 64 KiB.
func recordFlight(ln net.Listener, out string, wait, idle time.Duration) error {
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	conn, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("no connection from the client: %w", err)
	}
	defer conn.Close()
	var flight []byte
	buf := make([]byte, 64<<10)
	for len(flight) < 64<<10 {
		_ = conn.SetReadDeadline(time.Now().Add(idle))
		n, err := conn.Read(buf)
		flight = append(flight, buf[:n]...)
		if err != nil {
			break // quiet for idle, or closed
		}
	}
	if len(flight) == 0 {
		return errors.New("the client sent nothing")
	}
	if err := os.WriteFile(out, flight, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s: %d bytes\n", out, len(flight))
	return nil
}

// recordDatagrams writes the first count datagrams that arrive within wait:
// to out when count is 1, else to out with -1, -2, ... before its extension.
func recordDatagrams(pc net.PacketConn, out string, count int, wait time.Duration) error {
	if err := pc.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	buf := make([]byte, 65536)
	for i := 1; i <= count; i++ {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no datagram %d from the client: %w", i, err)
		}
		name := out
		if count > 1 {
			ext := filepath.Ext(name)
			name = fmt.Sprintf("%s-%d%s", strings.TrimSuffix(name, ext), i, ext)
		}
		if err := os.WriteFile(name, buf[:n], 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %d bytes from %v\n", name, n, from)
	}
	return nil
}
