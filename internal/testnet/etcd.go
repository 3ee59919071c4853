package testnet

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
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
	name     string
	cluster  string // --initial-cluster
	p        *Process
}

// StartEtcd runs etcd (see RequireBinary) and returns once it accepts
// connections on Client. It is killed when the test ends.
func StartEtcd(tb testing.TB) *Etcd {
	tb.Helper()
	bin := RequireBinary(tb, "etcd")
	e := &Etcd{Client: FreeAddr(tb), peer: FreeAddr(tb), tb: tb, bin: bin, dir: tb.TempDir(), name: "test"}
	e.cluster = e.name + "=http://" + e.peer
	e.Start()
	return e
}

// StartEtcdCluster runs an etcd cluster of n members and returns once each
// answers. Each member can be stopped and started again like a single one.
func StartEtcdCluster(tb testing.TB, n int) []*Etcd {
	tb.Helper()
	bin := RequireBinary(tb, "etcd")
	ms := make([]*Etcd, n)
	var initial []string
	for i := range ms {
		ms[i] = &Etcd{Client: FreeAddr(tb), peer: FreeAddr(tb), tb: tb, bin: bin, dir: tb.TempDir(), name: fmt.Sprintf("m%d", i)}
		initial = append(initial, ms[i].name+"=http://"+ms[i].peer)
	}
	// Every member is started before any is waited for: a new member
	// answers only once the cluster has elected a leader.
	for _, m := range ms {
		m.cluster = strings.Join(initial, ",")
		m.spawn()
	}
	for _, m := range ms {
		Eventually(tb, 30*time.Second, m.answers, "etcd %s never answered on %s:\n%s", m.name, m.Client, Later(m.p.Out.String))
	}
	return ms
}

// Start runs etcd again after Stop and waits until it answers requests:
// after a restart it accepts connections before it has recovered its data
// and elected itself, and a request meanwhile hangs.
func (e *Etcd) Start() {
	e.tb.Helper()
	e.spawn()
	Eventually(e.tb, 20*time.Second, e.answers, "etcd never answered on %s:\n%s", e.Client, Later(e.p.Out.String))
}

func (e *Etcd) spawn() {
	e.p = StartProcess(e.tb, exec.Command(e.bin, "--name", e.name, "--data-dir", e.dir,
		"--listen-client-urls", "http://"+e.Client, "--advertise-client-urls", "http://"+e.Client,
		"--listen-peer-urls", "http://"+e.peer, "--initial-advertise-peer-urls", "http://"+e.peer,
		"--initial-cluster", e.cluster, "--initial-cluster-token", "protoplex-test", "--log-level", "error"))
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
