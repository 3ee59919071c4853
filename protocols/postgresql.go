package protocols

import "encoding/binary"

func init() { register(postgreSQLDescriptor, NewPostgreSQLProtocol) }

var postgreSQLDescriptor = Descriptor{Spec: Spec{Name: "PostgreSQL", Transports: TCP, Detect: detectPostgreSQL, FirstBytes: []byte{0x00}},
	Aliases: []string{"postgres"}, Summary: "StartupMessage, SSLRequest, GSSENCRequest or CancelRequest"}

// NewPostgreSQLProtocol routes PostgreSQL clients: a StartupMessage
// (protocol 3.0), SSLRequest, GSSENCRequest or CancelRequest: a 4-byte
// length and a 4-byte code whose values are fixed or tightly bounded.
func NewPostgreSQLProtocol(target string) *Protocol { return build(&postgreSQLDescriptor, target) }

const (
	pgProtocol3   = 196608   // 3.0
	pgSSLRequest  = 80877103 // 1234.5679
	pgGSSENC      = 80877104
	pgCancel      = 80877102
	pgMaxStartLen = 10000
)

func detectPostgreSQL(data []byte) Result {
	// The first byte is the top byte of a length below 10000.
	if r := matchPrefixes(data, [][]byte{{0x00, 0x00}}); r != Match {
		return r
	}
	if len(data) < 8 {
		return NeedMore
	}
	length := binary.BigEndian.Uint32(data[0:4])
	switch code := binary.BigEndian.Uint32(data[4:8]); code {
	case pgSSLRequest, pgGSSENC:
		if length == 8 {
			return Match
		}
	case pgCancel:
		if length == 16 {
			return Match
		}
	case pgProtocol3:
		if length > 8 && length <= pgMaxStartLen {
			return Match
		}
	}
	return NoMatch
}
