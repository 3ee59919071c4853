// Command dgrecorder captures the first datagram a real client sends: it
// opens a UDP socket on 127.0.0.1, runs a client command pointed at that
// port, and writes the first datagram it receives. It never answers, so the
// client sends its opening datagram and then retries or gives up. With -n N
// it writes the first N datagrams, to F with -1, -2, ... before its
// extension (a ClientHello fragmented over datagrams). Used by
// ../record-datagrams.sh; it lives under testdata so ./... ignores it.
//
//	go run ./protocols/testdata/dgrecorder -out F [-n N] -- cmd args...   ({port} is replaced)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dgrecorder:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "", "file to write the first datagram to")
	wait := flag.Duration("wait", 10*time.Second, "how long to wait for the first datagram")
	count := flag.Int("n", 1, "how many datagrams to write")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 || *count < 1 {
		return errors.New("usage: dgrecorder -out FILE [-wait D] [-n N] -- cmd args...")
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	port := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)

	ctx, cancel := context.WithTimeout(context.Background(), *wait+5*time.Second)
	defer cancel()
	args := flag.Args()
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{port}", port)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	// Stop the whole process group: shell wrappers start the client as a
	// grandchild.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()

	if err := pc.SetReadDeadline(time.Now().Add(*wait)); err != nil {
		return err
	}
	buf := make([]byte, 65536)
	for i := 1; i <= *count; i++ {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no datagram %d from the client: %w", i, err)
		}
		name := *out
		if *count > 1 {
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
