package routing

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/protocols"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestBackendSetsReused: a reload keeps a protocol's backend set (health
// state, warm pool) exactly when its backend options are unchanged, and
// closes the sets no route uses any more.
func TestBackendSetsReused(t *testing.T) {
	st := metrics.New()
	ssh := protocols.NewSSHProtocol("127.0.0.1:1")
	ssh.Source = []string{"127.0.0.2"}
	plan, err := Build([]*protocols.Protocol{ssh, protocols.NewRedisProtocol("127.0.0.1:2")}, time.Minute, nil, st, discard)
	if err != nil {
		t.Fatal(err)
	}
	first := plan.Commit(context.Background())
	defer first.Close()

	same := ssh.Clone()
	same.Priority = 5 // not a backend option
	moved := protocols.NewRedisProtocol("127.0.0.1:2")
	moved.Source = []string{"127.0.0.4"} // a backend option
	plan, err = Build([]*protocols.Protocol{same, moved}, time.Minute, first, st, discard)
	if err != nil {
		t.Fatal(err)
	}
	next := plan.Commit(context.Background())
	defer next.Close()
	if next.Entries[0].Backend != first.Entries[0].Backend {
		t.Error("an unchanged protocol got a new backend set")
	}
	if next.Entries[1].Backend == first.Entries[1].Backend {
		t.Error("a change of source kept the old backend set")
	}
	if next.Entries[0].Stats == nil || next.Entries[1].Stats == nil {
		t.Error("metrics not resolved at commit")
	}
}

// TestBuildFailureStartsNothing: a plan that fails part-way closes the sets
// it built and leaves the live table untouched.
func TestBuildFailureStartsNothing(t *testing.T) {
	st := metrics.New()
	bad := protocols.NewSSHProtocol("127.0.0.1:1")
	bad.Source = []string{"not an address"}
	if _, err := Build([]*protocols.Protocol{protocols.NewRedisProtocol("127.0.0.1:2"), bad}, 0, nil, st, discard); err == nil {
		t.Fatal("a bad source was accepted")
	}
}

// TestHandlersHaveNoBackend: an in-process route dials nothing.
func TestHandlersHaveNoBackend(t *testing.T) {
	p := protocols.NewRedisProtocol("")
	p.Handler = func(c net.Conn) { c.Close() }
	plan, err := Build([]*protocols.Protocol{p}, 0, nil, metrics.New(), discard)
	if err != nil {
		t.Fatal(err)
	}
	rt := plan.Commit(context.Background())
	defer rt.Close()
	if rt.Entries[0].Backend != nil || rt.Pool() != (metrics.PoolMetrics{}) {
		t.Fatalf("handler route: backend %v, pool %+v", rt.Entries[0].Backend, rt.Pool())
	}
	if h := rt.Health(); len(h) != 1 || h[0].Checked != 0 || !rt.Serviceable() {
		t.Fatalf("handler route: health %+v, serviceable %v", h, rt.Serviceable())
	}
}
