//go:build !linux

package protoplex

import (
	"time"

	"github.com/darkit/protoplex/internal/handover"
)

// MoveConnections moves nothing here: no event loops, no upgrade.
func (pm *ProtocolManager) MoveConnections(*handover.Conn) (moved, left int, err error) {
	return 0, pm.conns.Len(), nil
}

// AdoptConnections takes nothing here.
func (pm *ProtocolManager) AdoptConnections(*handover.Conn, time.Time) (moved, left int, err error) {
	return 0, 0, nil
}
