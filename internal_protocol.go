package protoplex

import (
	"net"

	"github.com/darkit/protoplex/protocols"
)

// CreateInternalProtocol builds a protocol with ctor and serves its
// connections in-process with handler instead of forwarding them. The conn
// handler receives replays the bytes read during identification first.
//
//	pm.AddProtocol(protoplex.CreateInternalProtocol(protocols.NewRedisProtocol, redisHandler))
func CreateInternalProtocol(ctor func(target string) *protocols.Protocol, handler func(net.Conn)) *protocols.Protocol {
	p := ctor("")
	p.Handler = handler
	return p
}
