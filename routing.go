package protoplex

import (
	"fmt"

	"github.com/darkit/protoplex/internal/routing"
	"github.com/darkit/protoplex/protocols"
)

func (pm *ProtocolManager) rebuild() error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.rebuildLocked()
}

// rebuildLocked compiles pm.protos into a new routing snapshot and swaps it
// in. Backend sets of unchanged targets are reused so health state and warm
// pools survive.
func (pm *ProtocolManager) rebuildLocked() error {
	plan, err := pm.planLocked(pm.protos, pm.settings.Load())
	if err != nil {
		return err
	}
	pm.commitLocked(plan)
	return nil
}

// planLocked builds the routing of protos without changing anything.
func (pm *ProtocolManager) planLocked(protos []*protocols.Protocol, s *settings) (*routing.Plan, error) {
	plan, err := routing.Build(protos, s.CacheTTL, pm.routing.Load(), pm.stats)
	if err != nil {
		return nil, fmt.Errorf("protoplex: %w", err)
	}
	return plan, nil
}

// commitLocked makes plan the live routing. It cannot fail.
func (pm *ProtocolManager) commitLocked(plan *routing.Plan) { pm.routing.Store(plan.Commit(pm.ctx)) }
