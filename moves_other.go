//go:build !linux

package protoplex

import (
	"time"

	"github.com/darkit/protoplex/internal/handover"
)

// Moves is what an upgrade moved out of this process, and what stays.
type Moves struct {
	Conns, ConnsLeft int // established connections
	Flows, FlowsLeft int // UDP flows
}

// MoveConnections moves nothing here: no event loops, no upgrade.
func (pm *ProtocolManager) MoveConnections(*handover.Conn) (Moves, error) {
	return Moves{ConnsLeft: pm.conns.Len(), FlowsLeft: pm.udp.Flows()}, nil
}

// AdoptConnections takes nothing here.
func (pm *ProtocolManager) AdoptConnections(*handover.Conn, time.Time) (moved, left int, err error) {
	return 0, 0, nil
}
