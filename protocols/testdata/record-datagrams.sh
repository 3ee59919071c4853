#!/bin/sh
# Recreates testdata/datagrams/*.bin: the first datagram real clients send to
# a UDP socket on 127.0.0.1 that never answers (no other address is
# contacted). Needs: dig (bind9-dnsutils), turnutils_stunclient and
# turnutils_uclient (coturn), openvpn, sipsak, openssl, and for WireGuard
# wg (wireguard-tools), wireguard-go, ip (iproute2), root and /dev/net/tun
# (scripts/install-test-deps.sh installs the packages).
# Run from anywhere inside the module: protocols/testdata/record-datagrams.sh
out=protocols/testdata/datagrams mode=-udp
. "$(dirname "$0")/lib.sh"

rec dns-dig.bin -- dig +tries=1 +time=2 @127.0.0.1 -p {port} example.test A
rec dns-dig-noedns.bin -- dig +noedns +norec +tries=1 +time=2 @127.0.0.1 -p {port} example.test MX
rec stun-turnutils-stunclient.bin -- turnutils_stunclient -p {port} 127.0.0.1
rec stun-turnutils-uclient.bin -- turnutils_uclient -n 1 -m 1 -l 64 -p {port} -e 127.0.0.1 127.0.0.1
rec sip-sipsak.bin -- sipsak -E udp -s sip:test@127.0.0.1:{port}
rec dtls-openssl-sni.bin -- sh -c 'openssl s_client -dtls1_2 -connect 127.0.0.1:{port} -servername example.com -alpn h2,coap </dev/null'
rec dtls-openssl-nosni.bin -- sh -c 'openssl s_client -dtls -connect 127.0.0.1:{port} -noservername </dev/null'
rec dtls-openssl-v10.bin -- sh -c 'openssl s_client -dtls1 -cipher DEFAULT@SECLEVEL=0 -connect 127.0.0.1:{port} </dev/null'
# A 256-byte MTU fragments the ClientHello over two datagrams: dtls-openssl-mtu-1.bin and -2.bin.
rec dtls-openssl-mtu.bin -n 2 -- sh -c 'openssl s_client -dtls1_2 -mtu 256 -connect 127.0.0.1:{port} -servername frag.example -alpn h2 </dev/null'
# OpenVPN's client also needs a static key for tls-auth, tls-crypt and
# tls-crypt-v2.
client_pki
openvpn --genkey secret "$pki/ta.key" >/dev/null
openvpn --genkey tls-crypt-v2-server "$pki/v2s.key" >/dev/null
openvpn --genkey tls-crypt-v2-client "$pki/v2c.key" --tls-crypt-v2 "$pki/v2s.key" >/dev/null
ovpn() { name=$1; shift; rec "$name" -- openvpn --dev null --proto udp --remote 127.0.0.1 {port} --nobind --tls-client \
	--ca "$pki/ca.crt" --cert "$pki/c.crt" --key "$pki/c.key" --connect-retry-max 1 "$@"; }
ovpn openvpn-openvpn.bin
ovpn openvpn-openvpn-tlsauth.bin --tls-auth "$pki/ta.key" 1
ovpn openvpn-openvpn-tlsauth-sha512.bin --tls-auth "$pki/ta.key" 1 --auth SHA512
ovpn openvpn-openvpn-tlscrypt.bin --tls-crypt "$pki/ta.key"
ovpn openvpn-openvpn-tlscryptv2.bin --tls-crypt-v2 "$pki/v2c.key"
# WireGuard: wireguard-go's TUN interface, a peer whose endpoint is the
# recorder's port; one packet into the tunnel makes it send a handshake
# initiation. Removing the interface stops wireguard-go.
wgif=wgrec$$
trap 'ip link del "$wgif" 2>/dev/null; rm -rf "$pki"' EXIT
(umask 077 && wg genkey >"$pki/wg-a.key" && wg genkey | wg pubkey >"$pki/wg-b.pub")
wireguard-go "$wgif" >/dev/null 2>&1
wg set "$wgif" private-key "$pki/wg-a.key"
ip addr add 10.213.0.1/24 dev "$wgif"
ip link set "$wgif" up
rec wireguard-wireguardgo.bin -- sh -c "wg set $wgif peer $(cat "$pki/wg-b.pub") endpoint 127.0.0.1:{port} \
	allowed-ips 10.213.0.2/32 && bash -c 'echo x >/dev/udp/10.213.0.2/9' && sleep 10"
