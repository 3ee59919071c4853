package testnet

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"time"
)

// KeepAliveGet sends one HTTP/1.1 GET of path on c and reads the whole
// reply within 10 s, leaving the connection open for another request (a
// monitoring client that holds its connection idle between probes).
func KeepAliveGet(c net.Conn, path string) (*http.Response, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: probe\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, err
}
