package protocols

import "bytes"

func init() {
	register(Descriptor{Name: "SIP", New: NewSIPProtocol, Summary: "SIP/2.0 request line with a sip: or sips: URI"})
}

// NewSIPProtocol routes SIP over TCP: a request line METHOD SP sip:/sips:
// URI SP "SIP/2.0".
func NewSIPProtocol(target string) *Protocol {
	return &Protocol{Name: "SIP", Target: target, Detect: detectSIP, FirstBytes: []byte("IRAOBCSNMPUE")}
}

var sipMethods = []string{"INVITE", "REGISTER", "OPTIONS", "ACK", "BYE", "CANCEL", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH"}

func detectSIP(data []byte) Result {
	return requestLine(data, sipMethods, "SIP/2.0", func(uri []byte) bool {
		return bytes.HasPrefix(uri, []byte("sip:")) || bytes.HasPrefix(uri, []byte("sips:"))
	})
}
