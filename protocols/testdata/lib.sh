# Sourced by record.sh, record-datagrams.sh and record-quic.sh after they set
# out, the directory the recordings go to (relative to the module root), and
# optionally mode=-udp. It moves to the module root and defines
#
#	rec NAME [recorder flags] -- cmd args...   records into $out/NAME
#	client_pki                                 makes $pki with ca.crt, c.crt, c.key
set -eu
cd "$(dirname "$0")/../.."
mkdir -p "$out"
rec() { name=$1; shift; go run ./protocols/testdata/recorder ${mode:-} -out "$out/$name" "$@"; }

# client_pki makes a temporary directory $pki, removed on exit, holding a CA
# (ca.crt, ca.key) and a client certificate it signed (c.crt, c.key): OpenVPN's
# client needs a certificate before it sends its first packet.
client_pki() {
	pki=$(mktemp -d)
	trap 'rm -rf "$pki"' EXIT
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
		-subj /CN=ca -days 1 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/c.key" -out "$pki/c.csr" -subj /CN=c 2>/dev/null
	openssl x509 -req -in "$pki/c.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -out "$pki/c.crt" -days 1 2>/dev/null
}
