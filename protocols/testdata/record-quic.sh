#!/bin/sh
# Recreates testdata/datagrams/quic-*.bin: the first datagram of QUIC clients,
# captured by a UDP socket on 127.0.0.1 that never answers (no other address
# is contacted). Needs: gtlsclient (ngtcp2-client; scripts/install-test-deps.sh
# installs it) and the Go module proxy for quic-go (testdata/quicgo).
# Run from anywhere inside the module: protocols/testdata/record-quic.sh
out=protocols/testdata/datagrams mode=-udp
. "$(dirname "$0")/lib.sh"

# ALPN h3, QUIC version 1. Debian's gtlsclient (ngtcp2 0.12) sends "localhost"
# as SNI for a numeric host and ignores --sni; its "-v 0x6b3343cf" sends
# version 1 packet types (draft QUIC v2 only), so no version 2 is recorded.
rec quic-gtlsclient.bin -- gtlsclient -q --timeout=3s 127.0.0.1 {port} https://localhost/

# quic-go's client (a module of its own, so that quic-go is no dependency of
# protoplex): its ClientHello with an X25519MLKEM768 key share spans two
# datagrams, written to NAME-1.bin and NAME-2.bin; versions 1 and 2.
(cd protocols/testdata/quicgo &&
	go run . -out "../datagrams/quic-quicgo-v1" -version 1 -sni a.example -alpn h3 &&
	go run . -out "../datagrams/quic-quicgo-v2" -version 2 -sni b.example -alpn h3)
