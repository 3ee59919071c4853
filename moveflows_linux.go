package protoplex

import (
	"errors"
	"fmt"
	"os"

	"github.com/darkit/protoplex/internal/handover"
	"github.com/darkit/protoplex/internal/udp"
)

// Moving UDP flows during an upgrade, after the connections (the old
// process reads its UDP listeners meanwhile) and before their Done: the old
// process stops reading its listen_udp sockets, which the new one holds
// unread (WithHeldUDP), then moves the event loops' flows in batches, each
// with its upstream socket and committed as connections are, and ends the
// phase with an empty Flows message naming the flows it keeps. A batch
// refused or met by an error stays here, and so does everything after it:
// those flows drain here.
// After a refusal, or an answer too late to commit, the new process
// reads the listeners (the flows' next datagrams open flows there, as
// before flows moved); after an error (the new process is gone) this one
// reads them again. Flows of the goroutine
// data plane never move.

// moveFlows gives the event loops' UDP flows to the process at the other
// end of hc; it returns how many moved and how many stay here to drain.
func (pm *ProtocolManager) moveFlows(hc *handover.Conn) (moved, left int, err error) {
	e := pm.udp
	e.PauseListeners()
	for err == nil {
		b := e.DetachFlows(handover.MaxFDsPerMessage)
		if b == nil {
			break
		}
		if err = pm.sendBatch(hc, b.Msg, b.FDs, b.Len()); err != nil {
			e.RestoreFlows(b)
			break
		}
		e.MovedFlows(b)
		moved += b.Len()
	}
	left = e.Flows()
	if err == nil {
		// The end of the phase; after an error the Done that follows ends
		// it (the new process may wait for a commit).
		err = hc.Send(handover.Message{Kind: handover.Flows, Count: uint32(left)}, nil)
	}
	if err != nil && !errors.Is(err, errRefused) && !errors.Is(err, errLate) {
		// The new process is gone, or never reads its listeners: this
		// one reads them again, for the flows it kept.
		e.ResumeListeners()
	}
	return moved, left, err
}

// flowsIn is what AdoptConnections took of the old process's flows.
type flowsIn struct {
	moved, left int
}

// adoptFlows takes one Flows message: a batch, refused (the old process
// keeps it) or taken on the old process's commit (commitBatch), or the end
// of the phase, which releases this process's UDP listeners. ended: the
// old process ended the handover meanwhile (Done, kept the connections it
// keeps, or its close).
func (pm *ProtocolManager) adoptFlows(hc *handover.Conn, m handover.Message, files []*os.File, in *flowsIn) (ended bool, kept int, err error) {
	if len(m.Records) == 0 {
		in.left = int(m.Count)
		pm.udp.Release()
		return false, 0, nil
	}
	var prep *udp.FlowAdoption
	var why error
	if free := fdsFree(); free-len(files) < fdReserve {
		closeFiles(files)
		why = fmt.Errorf("%d descriptors would leave %d free of the open-files limit, under the %d kept for new connections", len(files), free-len(files), fdReserve)
	} else {
		prep, why = pm.udp.PrepareFlows(m, files)
	}
	if why != nil {
		pm.log.Warn("upgrade: udp flows refused, the old process keeps them", "err", why)
		return false, 0, hc.Send(handover.Message{Kind: handover.Refuse, Note: truncate(why.Error(), handover.MaxNote)}, nil)
	}
	n, kept, ended, err := pm.commitBatch(hc, prep)
	in.moved += n
	return ended, kept, err
}
