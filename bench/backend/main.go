// Command backend is the benchmark's backend: the same server behind every
// contender (direct, protoplex, sslh, haproxy).
//
//	-http ADDR  HTTP responder: reads a request head and answers "ok", then
//	            closes; "GET /bulk?bytes=N" streams N bytes; "GET /hold" keeps
//	            the connection open (idle-memory figure), echoing what
//	            follows (loadgen's check that it still answers).
//	-ssh ADDR   SSH-banner responder: reads the client's banner line, answers
//	            with its own, closes.
//	-byte ADDR  one-byte responder (off when empty): reads what the client
//	            sends first (a TLS ClientHello), answers one byte, closes.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:0", "HTTP responder address")
	sshAddr := flag.String("ssh", "127.0.0.1:0", "SSH-banner responder address")
	byteAddr := flag.String("byte", "", "one-byte responder address (off when empty)")
	flag.Parse()
	if *byteAddr != "" {
		bl, err := net.Listen("tcp", *byteAddr)
		if err != nil {
			log.Fatal(err)
		}
		go serve(bl, serveByte)
	}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		log.Fatal(err)
	}
	sl, err := net.Listen("tcp", *sshAddr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ready http=%s ssh=%s\n", hl.Addr(), sl.Addr())
	os.Stdout.Sync()
	go serve(sl, serveSSH)
	serve(hl, serveHTTP)
}

func serve(ln net.Listener, h func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go h(c)
	}
}

var okReply = []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

func serveHTTP(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4096)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	for { // rest of the head
		l, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(l)) == 0 {
			break
		}
	}
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return
	}
	path := fields[1]
	switch {
	case strings.HasPrefix(path, "/bulk?bytes="):
		n, _ := strconv.ParseInt(strings.TrimPrefix(path, "/bulk?bytes="), 10, 64)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", n)
		buf := make([]byte, 256<<10)
		for n > 0 {
			m := int64(len(buf))
			if n < m {
				m = n
			}
			if _, err := c.Write(buf[:m]); err != nil {
				return
			}
			n -= m
		}
	case path == "/hold":
		// Held open until the client goes away, echoing what it sends:
		// a byte that comes back says the connection still answers.
		c.Write([]byte("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"))
		io.Copy(c, r)
	default:
		c.Write(okReply)
	}
}

func serveSSH(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 512)
	if _, err := r.ReadSlice('\n'); err != nil {
		return
	}
	c.Write([]byte("SSH-2.0-bench\r\n"))
}

// serveByte answers the client's first read with one byte, then closes.
func serveByte(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	if _, err := c.Read(buf); err != nil {
		return
	}
	c.Write([]byte{'!'})
}
