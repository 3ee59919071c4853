// Command recorder captures a real client's first flight: it listens on
// 127.0.0.1, runs a client command pointed at that port (or dials itself with
// Go's crypto/tls), and writes the bytes the client sent before it went quiet.
// Used by ../record.sh; it lives under testdata so ./... ignores it.
//
//	go run ./protocols/testdata/recorder -out F [-idle 500ms] -- cmd args...   ({port} is replaced)
//	go run ./protocols/testdata/recorder -out F -gotls example.com
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
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "recorder:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "", "file to write the first flight to")
	idle := flag.Duration("idle", 500*time.Millisecond, "the flight ends after the client is quiet this long")
	goTLS := flag.String("gotls", "", "dial with Go's crypto/tls using this server name instead of running a command")
	flag.Parse()
	if *out == "" || (*goTLS == "" && flag.NArg() == 0) {
		return errors.New("usage: recorder -out FILE [-idle D] (-gotls NAME | -- cmd args...)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clientDone := make(chan error, 1)
	if *goTLS != "" {
		go func() {
			d := tls.Dialer{Config: &tls.Config{ServerName: *goTLS, NextProtos: []string{"h2", "http/1.1"}, InsecureSkipVerify: true}}
			c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if err == nil {
				c.Close()
			}
			clientDone <- err
		}()
	} else {
		args := flag.Args()
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "{port}", port)
		}
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		// Stop the whole process group: wrappers such as xvfb-run start
		// the client as a grandchild.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		if err := cmd.Start(); err != nil {
			return err
		}
		go func() { clientDone <- cmd.Wait() }()
	}

	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	conn, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("no connection from the client: %w", err)
	}
	var flight []byte
	buf := make([]byte, 64<<10)
	for len(flight) < 64<<10 {
		_ = conn.SetReadDeadline(time.Now().Add(*idle))
		n, err := conn.Read(buf)
		flight = append(flight, buf[:n]...)
		if err != nil {
			break // quiet for idle, or closed
		}
	}
	conn.Close()
	cancel() // stops the client command
	<-clientDone
	if len(flight) == 0 {
		return errors.New("the client sent nothing")
	}
	if err := os.WriteFile(*out, flight, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s: %d bytes\n", *out, len(flight))
	return nil
}
