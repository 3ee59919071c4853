#!/bin/sh
# Recreates testdata/flights/*.bin: the first bytes real clients send, captured
# by a listener on 127.0.0.1 (no other address is contacted).
# Needs: curl, openssl, ssh (openssh-client), redis-cli (redis-tools), bash,
# psql, mosquitto_pub, dig, turnutils_uclient (coturn), sipsak, ffmpeg,
# xfreerdp + xvfb-run, openvpn (scripts/install-test-deps.sh installs them), and
# chromium (apt-get install chromium; only for recording, no test needs it).
# Run from anywhere inside the module: protocols/testdata/record.sh
out=protocols/testdata/flights
. "$(dirname "$0")/lib.sh"

rec http-curl.bin -- curl -s http://127.0.0.1:{port}/index.html
rec http-curl-post.bin -- curl -s -d 'a=1&b=2' http://127.0.0.1:{port}/form
rec http-wget.bin -- wget -q -O /dev/null -t 1 http://127.0.0.1:{port}/
rec http-curl-proxy.bin -- curl -s -x http://127.0.0.1:{port} http://www.example.com/
rec http2-curl.bin -- curl -s --http2-prior-knowledge http://127.0.0.1:{port}/
# Debian's curl 7.88 has no ws:// support: send the RFC 6455 handshake headers.
rec websocket-curl.bin -- curl -s --http1.1 -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
	-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Sec-WebSocket-Version: 13' http://127.0.0.1:{port}/chat
rec webdav-curl-propfind.bin -- curl -s -X PROPFIND -H 'Depth: 1' -H 'Content-Type: application/xml' \
	--data '<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>' http://127.0.0.1:{port}/dav/
rec webdav-curl-mkcol.bin -- curl -s -X MKCOL http://127.0.0.1:{port}/dav/new/
rec tls-openssl-sni.bin -- sh -c 'openssl s_client -connect 127.0.0.1:{port} -servername example.com -alpn h2,http/1.1 </dev/null'
rec tls-openssl-nosni.bin -- sh -c 'openssl s_client -connect 127.0.0.1:{port} -noservername </dev/null'
rec tls-curl.bin -- curl -s -k --resolve example.test:{port}:127.0.0.1 https://example.test:{port}/
rec tls-go.bin -gotls go.example.test
# Chromium's ClientHello (about 1.8 KB with the X25519MLKEM768 key share); it may resolve nothing but a.example.
rec tls-chromium.bin -- chromium --headless=new --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
	--disable-component-update --disable-sync --disable-default-apps --no-proxy-server --user-data-dir="$(mktemp -d)" \
	'--host-resolver-rules=MAP a.example 127.0.0.1, MAP * ~NOTFOUND' --dump-dom https://a.example:{port}/
rec ssh-openssh.bin -- ssh -p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes test@127.0.0.1
rec redis-cli.bin -- redis-cli -h 127.0.0.1 -p {port} PING
rec redis-cli-auth.bin -- redis-cli -h 127.0.0.1 -p {port} --no-auth-warning -a secret GET key
rec redis-inline.bin -- bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; printf "PING\r\n" >&3; sleep 5'
rec socks5-curl.bin -- curl -s --socks5-hostname 127.0.0.1:{port} http://www.example.test/
rec socks4-curl-4a.bin -- curl -s --socks4a 127.0.0.1:{port} http://www.example.test/
rec socks4-curl.bin -- curl -s --socks4 127.0.0.1:{port} http://127.0.0.2/
rec postgresql-psql.bin -- psql -h 127.0.0.1 -p {port} -U app -d app -c 'select 1'
rec postgresql-psql-nossl.bin -- env PGSSLMODE=disable psql -h 127.0.0.1 -p {port} -U app -d app -c 'select 1'
rec mqtt-mosquitto-v31.bin -- mosquitto_pub -h 127.0.0.1 -p {port} -V mqttv31 -t t -m hello
rec mqtt-mosquitto-v311.bin -- mosquitto_pub -h 127.0.0.1 -p {port} -V mqttv311 -t t -m hello
rec mqtt-mosquitto-v5.bin -- mosquitto_pub -h 127.0.0.1 -p {port} -V mqttv5 -t t -m hello
rec dns-dig.bin -- dig +tcp +tries=1 +time=2 @127.0.0.1 -p {port} example.test A
rec stun-turnutils.bin -- turnutils_uclient -t -n 1 -m 1 -l 64 -p {port} -e 127.0.0.1 127.0.0.1
rec sip-sipsak.bin -- sipsak -E tcp -s sip:test@127.0.0.1:{port}
rec rtsp-ffmpeg.bin -- ffmpeg -hide_banner -loglevel quiet -re -f lavfi -i testsrc=size=64x48:rate=5 -t 1 \
	-c:v mpeg4 -f rtsp -rtsp_transport tcp rtsp://127.0.0.1:{port}/live
rec rtmp-ffmpeg.bin -- ffmpeg -hide_banner -loglevel quiet -re -f lavfi -i testsrc=size=64x48:rate=5 -t 1 \
	-f flv rtmp://127.0.0.1:{port}/live/test
rec rdp-xfreerdp.bin -- xvfb-run -a xfreerdp /v:127.0.0.1:{port} /cert:ignore /u:test /p:test +auth-only
client_pki
rec openvpn-openvpn.bin -- openvpn --dev null --proto tcp-client --remote 127.0.0.1 {port} --tls-client \
	--ca "$pki/ca.crt" --cert "$pki/c.crt" --key "$pki/c.key" --connect-retry-max 1
