package testnet

import (
	"net/http"
	"os/exec"
	"testing"
	"time"
)

// Etcd is a real single-member etcd that the test owns, on free loopback
// ports with a data directory of the test's. Stop and Start restart it on
// the same ports and data, as a crashed member comes back.
type Etcd struct {
	Client string // the client address, host:port (the endpoint is "http://" + Client)

	tb       testing.TB
	bin, dir string
	peer     string
	p        *Process
}

// StartEtcd runs etcd (see RequireBinary) and returns once it accepts
// connections on Client. It is killed when the test ends.
func StartEtcd(tb testing.TB) *Etcd {
	tb.Helper()
	bin := RequireBinary(tb, "etcd")
	e := &Etcd{Client: FreeAddr(tb), peer: FreeAddr(tb), tb: tb, bin: bin, dir: tb.TempDir()}
	e.Start()
	return e
}

// Start runs etcd again after Stop and waits until it answers requests:
// after a restart it accepts connections before it has recovered its data
// and elected itself, and a request meanwhile hangs.
func (e *Etcd) Start() {
	e.tb.Helper()
	e.p = StartProcess(e.tb, exec.Command(e.bin, "--name", "test", "--data-dir", e.dir,
		"--listen-client-urls", "http://"+e.Client, "--advertise-client-urls", "http://"+e.Client,
		"--listen-peer-urls", "http://"+e.peer, "--initial-advertise-peer-urls", "http://"+e.peer,
		"--initial-cluster", "test=http://"+e.peer, "--log-level", "error"))
	Eventually(e.tb, 20*time.Second, e.answers, "etcd never answered on %s:\n%s", e.Client, e.p.Out)
}

// Stop kills etcd and waits until it is reaped.
func (e *Etcd) Stop() { e.p.Stop() }

// answers reports whether etcd serves its /version within a second.
func (e *Etcd) answers() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + e.Client + "/version")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
