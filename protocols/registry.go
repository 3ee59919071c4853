package protocols

import "strings"

// Constructor builds a built-in protocol routed to target.
type Constructor func(target string) *Protocol

// builtins maps lower-case protocol names (as written in YAML) to
// constructors. Read-only after package initialisation.
var builtins = map[string]Constructor{
	// Each protocol file adds its own line here, keep it sorted.
	"dns":        NewDNSProtocol,
	"ftp":        NewFTPProtocol,
	"http":       NewHTTPProtocol,
	"http2":      NewHTTP2Protocol,
	"mqtt":       NewMQTTProtocol,
	"openvpn":    NewOpenVPNProtocol,
	"postgres":   NewPostgreSQLProtocol,
	"postgresql": NewPostgreSQLProtocol,
	"rdp":        NewRDPProtocol,
	"redis":      NewRedisProtocol,
	"rtmp":       NewRTMPProtocol,
	"rtsp":       NewRTSPProtocol,
	"sip":        NewSIPProtocol,
	"smtp":       NewSMTPProtocol,
	"socks":      NewSOCKSProtocol,
	"socks4":     NewSOCKS4Protocol,
	"socks5":     NewSOCKS5Protocol,
	"ssh":        NewSSHProtocol,
	"stun":       NewSTUNProtocol,
	"tls":        NewTLSProtocol,
	"turn":       NewSTUNProtocol,
	"webdav":     NewWebDAVProtocol,
	"websocket":  NewWebSocketProtocol,
}

// Lookup returns the constructor of the built-in protocol called name
// (case-insensitive: "http", "HTTP", "Http" are the same).
func Lookup(name string) (Constructor, bool) {
	c, ok := builtins[strings.ToLower(name)]
	return c, ok
}

// Names returns the built-in protocol names (lower case).
func Names() []string {
	out := make([]string, 0, len(builtins))
	for n := range builtins {
		out = append(out, n)
	}
	return out
}
