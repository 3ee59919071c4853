package protocols

import "bytes"

func init() { register(sipDescriptor, NewSIPProtocol) }

var sipDescriptor = Descriptor{Name: "SIP", Transports: TCP, Detect: detectSIP, FirstBytes: []byte("IRAOBCSNMPUE"),
	Summary: "SIP/2.0 request line with a sip: or sips: URI"}

// NewSIPProtocol routes SIP over TCP: a request line METHOD SP sip:/sips:
// URI SP "SIP/2.0".
func NewSIPProtocol(target string) *Protocol { return build(&sipDescriptor, target) }

var sipMethods = []string{"INVITE", "REGISTER", "OPTIONS", "ACK", "BYE", "CANCEL", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH"}

func detectSIP(data []byte) Result {
	return requestLine(data, sipMethods, "SIP/2.0", func(uri []byte) bool {
		return bytes.HasPrefix(uri, []byte("sip:")) || bytes.HasPrefix(uri, []byte("sips:"))
	})
}
