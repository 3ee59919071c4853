package routing

import (
	"testing"

	"github.com/darkit/protoplex/internal/metrics"
	"github.com/darkit/protoplex/protocols"
)

// TestTransparentIsABackendOption: turning transparent on rebuilds the
// route's backend set and is reported as a change of the route.
func TestTransparentIsABackendOption(t *testing.T) {
	st := metrics.New()
	_, first := build(t, st, nil, protocols.NewSSHProtocol("127.0.0.1:1"))
	ssh := protocols.NewSSHProtocol("127.0.0.1:1")
	ssh.Transparent = true
	c, next := build(t, st, first, ssh)
	if len(c.Changed) != 1 || c.Changed[0] != "SSH->127.0.0.1:1 (transparent)" {
		t.Fatalf("changes %+v", c)
	}
	if next.Entries[0].Backend == first.Entries[0].Backend {
		t.Error("turning transparent on kept the old backend set")
	}
}
