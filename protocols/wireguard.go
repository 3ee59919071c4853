package protocols

func init() { register(wireGuardDescriptor, NewWireGuardProtocol) }

var wireGuardDescriptor = Descriptor{Spec: Spec{Name: "WireGuard", Transports: UDP, Datagram: detectWireGuard,
	FirstBytes: []byte{wireGuardInitiation}}, Summary: "WireGuard handshake initiation (UDP)"}

// NewWireGuardProtocol routes WireGuard (UDP only): a flow's first datagram
// is a handshake initiation, exactly 148 bytes: message type 1, three
// reserved zero bytes, then the sender index, ephemeral key, encrypted
// static key and timestamp, and the two MACs. Its contents are encrypted or
// random, so the type, the reserved bytes and the size are what tell.
func NewWireGuardProtocol(target string) *Protocol { return build(&wireGuardDescriptor, target) }

const (
	wireGuardInitiation     = 1
	wireGuardInitiationSize = 148
)

func detectWireGuard(datagrams [][]byte) Result {
	if len(datagrams) == 0 {
		return NeedMore
	}
	d := datagrams[0]
	if len(d) != wireGuardInitiationSize || d[0] != wireGuardInitiation || d[1] != 0 || d[2] != 0 || d[3] != 0 {
		return NoMatch
	}
	return Match
}
