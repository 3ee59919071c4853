package protocols

func init() { register(rtmpDescriptor, NewRTMPProtocol) }

var rtmpDescriptor = Descriptor{Spec: Spec{Name: "RTMP", Transports: TCP, Detect: detectRTMP, FirstBytes: []byte{0x03}},
	Summary: "RTMP handshake: C0 version 3 and a 1536-byte C1"}

// NewRTMPProtocol routes RTMP: C0 (version 3) and the 1536-byte C1. It
// needs 1537 bytes to be sure; being structural, it holds the decision open
// past IdentifyMinBytes until then. An RDP connection request, which also
// starts with 0x03, is told apart by its TPKT/X.224 structure.
func NewRTMPProtocol(target string) *Protocol { return build(&rtmpDescriptor, target) }

const rtmpHandshake = 1 + 1536

func detectRTMP(data []byte) Result {
	if len(data) == 0 {
		return NeedMore
	}
	if data[0] != 0x03 || detectRDP(data) == Match {
		return NoMatch
	}
	if len(data) < rtmpHandshake {
		return NeedMore
	}
	return Match
}
