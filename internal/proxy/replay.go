package proxy

import "net"

// ReplayConn is a net.Conn whose first reads return the bytes consumed during
// identification, then continue from the underlying conn. In-process handlers
// receive one, so they see the client's stream from its first byte.
type ReplayConn struct {
	net.Conn
	replay []byte
}

// NewReplayConn returns conn with replay put back in front of its stream.
// replay is copied: the caller's buffer can be reused.
func NewReplayConn(conn net.Conn, replay []byte) *ReplayConn {
	return &ReplayConn{Conn: conn, replay: append([]byte(nil), replay...)}
}

func (c *ReplayConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the underlying conn when it supports it.
func (c *ReplayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
