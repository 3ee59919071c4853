// Command dgrecorder captures the first datagram a real client sends: it
// opens a UDP socket on 127.0.0.1, runs a client command pointed at that
// port, and writes the first datagram it receives. It never answers, so the
// client sends its opening datagram and then retries or gives up. Used by
// ../record-datagrams.sh; it lives under testdata so ./... ignores it.
//
//	go run ./protocols/testdata/dgrecorder -out F -- cmd args...   ({port} is replaced)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
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
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		return errors.New("usage: dgrecorder -out FILE [-wait D] -- cmd args...")
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
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return fmt.Errorf("no datagram from the client: %w", err)
	}
	if err := os.WriteFile(*out, buf[:n], 0o644); err != nil {
		return err
	}
	fmt.Printf("%s: %d bytes from %v\n", *out, n, from)
	return nil
}
