package testnet

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
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

// Metric scrapes url (a /metrics page, at most 4 MiB read) and returns the
// value of the series named exactly series (name and labels as printed),
// or 0 when the page does not have it.
func Metric(t testing.TB, url, series string) float64 {
	t.Helper()
	v, err := ScrapeMetric(url, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// ScrapeMetric is Metric returning its error, for a condition polled while
// the metrics port may not answer yet (a process starting, an upgrade).
func ScrapeMetric(url, series string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q", series, l)
			}
			return f, nil
		}
	}
	return 0, nil
}
