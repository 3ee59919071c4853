package protocols

func init() { register(rtspDescriptor, NewRTSPProtocol) }

var rtspDescriptor = Descriptor{Spec: Spec{Name: "RTSP", Transports: TCP, Detect: detectRTSP, FirstBytes: []byte("ODSPTRAG")},
	Summary: "RTSP/1.0 request line"}

// NewRTSPProtocol routes RTSP: a request line METHOD SP URI SP "RTSP/1.0"
// (the version token tells it from HTTP, which rejects it).
func NewRTSPProtocol(target string) *Protocol { return build(&rtspDescriptor, target) }

var rtspMethods = []string{"OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "ANNOUNCE", "RECORD", "GET_PARAMETER", "SET_PARAMETER", "REDIRECT"}

func detectRTSP(data []byte) Result {
	return requestLine(data, rtspMethods, "RTSP/1.0", func(uri []byte) bool { return len(uri) > 0 })
}
