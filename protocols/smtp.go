package protocols

func init() { register(smtpDescriptor, NewSMTPProtocol) }

var smtpDescriptor = Descriptor{Spec: Spec{Name: "SMTP", Transports: TCP, Detect: detectSMTP, FirstBytes: []byte("EeHh"), ServerFirst: true},
	Summary: "chosen on client silence, or on a client's EHLO/HELO"}

// NewSMTPProtocol routes SMTP. The client normally waits for the server's
// 220 greeting, so the protocol is chosen when the client stays silent
// (server-first); a client that speaks first with EHLO or HELO is matched too.
func NewSMTPProtocol(target string) *Protocol { return build(&smtpDescriptor, target) }

func detectSMTP(data []byte) Result {
	return matchPrefixesFold(data, "ehlo ", "helo ")
}
