// Command quicgorecorder captures the first datagrams quic-go's client sends:
// it opens a UDP socket on 127.0.0.1 that never answers, dials it with
// quic-go (QUIC version 1 or 2, SNI and ALPN as given; Go's default key
// shares include X25519MLKEM768, so the ClientHello spans two Initial
// packets) and writes each datagram of the first flight to OUT-N.bin. Used
// by ../record-quic.sh. With -dial it is a client instead: it completes a
// handshake with the QUIC server at ADDR and prints the common name of the
// certificate the server sent (the end-to-end tests tell servers apart by
// it). A module of its own so that quic-go is no dependency of protoplex.
//
//	go run . -out DIR/quic-quicgo-v1 -version 1 -sni a.example -alpn h3
//	go run . -dial 127.0.0.1:4433 -sni b.example -alpn h3
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/quic-go/quic-go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quicgorecorder:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "", "file name prefix: datagram N goes to PREFIX-N.bin")
	version := flag.Int("version", 1, "QUIC version: 1 or 2")
	sni := flag.String("sni", "a.example", "TLS server_name")
	alpn := flag.String("alpn", "h3", "ALPN protocol")
	dial := flag.String("dial", "", "handshake with the server at this address and print its certificate's common name")
	flag.Parse()
	if (*out == "") == (*dial == "") {
		return errors.New("usage: quicgorecorder -out PREFIX | -dial ADDR [-version 1|2] [-sni NAME] [-alpn PROTO]")
	}
	v := quic.Version1
	if *version == 2 {
		v = quic.Version2
	}
	tlsConf := &tls.Config{ServerName: *sni, NextProtos: []string{*alpn}, InsecureSkipVerify: true}
	if *dial != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := quic.DialAddr(ctx, *dial, tlsConf, &quic.Config{Versions: []quic.Version{v}})
		if err != nil {
			return err
		}
		defer conn.CloseWithError(0, "")
		certs := conn.ConnectionState().TLS.PeerCertificates
		if len(certs) == 0 {
			return errors.New("the server sent no certificate")
		}
		fmt.Println("server:", certs[0].Subject.CommonName)
		return nil
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() {
		// The dial fails when ctx ends: nobody answers.
		_, _ = quic.DialAddr(ctx, pc.LocalAddr().String(), tlsConf, &quic.Config{Versions: []quic.Version{v}})
	}()

	// The first flight: the datagrams sent back to back, before the client
	// waits for its probe timeout (about 300 ms) and resends.
	buf := make([]byte, 65536)
	var from net.Addr
	for n := 1; ; n++ {
		wait := 100 * time.Millisecond
		if n == 1 {
			wait = 2 * time.Second
		}
		if err := pc.SetReadDeadline(time.Now().Add(wait)); err != nil {
			return err
		}
		size, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if n == 1 {
				return fmt.Errorf("no datagram from the client: %w", err)
			}
			return nil
		}
		if from != nil && addr.String() != from.String() {
			return fmt.Errorf("datagram from %v, then from %v", from, addr)
		}
		from = addr
		name := fmt.Sprintf("%s-%d.bin", *out, n)
		if err := os.WriteFile(name, buf[:size], 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %d bytes from %v\n", name, size, addr)
	}
}
