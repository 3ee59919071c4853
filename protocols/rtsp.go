package protocols

func init() {
	register(Descriptor{Name: "RTSP", New: NewRTSPProtocol, Summary: "RTSP/1.0 request line"})
}

// NewRTSPProtocol routes RTSP: a request line METHOD SP URI SP "RTSP/1.0"
// (the version token tells it from HTTP, which rejects it).
func NewRTSPProtocol(target string) *Protocol {
	return &Protocol{Name: "RTSP", Target: target, Detect: detectRTSP, FirstBytes: []byte("ODSPTRAG")}
}

var rtspMethods = []string{"OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "ANNOUNCE", "RECORD", "GET_PARAMETER", "SET_PARAMETER", "REDIRECT"}

func detectRTSP(data []byte) Result {
	return requestLine(data, rtspMethods, "RTSP/1.0", func(uri []byte) bool { return len(uri) > 0 })
}
