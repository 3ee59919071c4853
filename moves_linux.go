package protoplex

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/handover"
	"golang.org/x/sys/unix"
)

// Moving established connections during an upgrade (cmd/protoplex:
// SIGUSR2), once the new process has acknowledged the listeners. Only the
// event loops' forwarding pairs, identifying connections and those whose
// loop connects to their backend move; everything else (in-process
// handlers, the goroutine data plane, PROXY headers being read, dials off
// the loop and replays in progress) drains in the old process as on
// SIGTERM. The loops' UDP flows move before them (moveflows_linux.go).

// fdReserve is what a process keeps of its descriptor limit for new
// connections while it takes moved ones: a batch that would cut into it
// is refused, and stays in the old process.
const fdReserve = 512

// Moves is what an upgrade moved out of this process, and what stays.
type Moves struct {
	Conns, ConnsLeft int // established connections
	Flows, FlowsLeft int // UDP flows
}

// MoveConnections gives the event loops' movable connections to the process
// at the other end of hc, a batch (≤ handover.MaxFDsPerMessage
// descriptors) at a time: each batch leaves the loops, is sent, and is
// closed here only once the new process acknowledged it. A batch it
// refuses, or that meets an error, goes on here, and so does everything
// after it. Then the UDP flows move the same way (moveFlows). It returns
// how many moved and how many stay here to drain, which it tells the new
// process last (Done).
func (pm *ProtocolManager) MoveConnections(hc *handover.Conn) (mv Moves, err error) {
	if p := pm.loops.Plane(); p != nil {
		for err == nil {
			b := p.Detach(handover.MaxFDsPerMessage)
			if b == nil {
				break
			}
			if err = sendBatch(hc, b.Msg, b.FDs, b.Len()); err != nil {
				p.Restore(b)
				break
			}
			p.Moved(b)
			mv.Conns += b.Len()
		}
	}
	if err == nil {
		mv.Flows, mv.FlowsLeft, err = pm.moveFlows(hc)
	} else {
		mv.FlowsLeft = pm.udp.Flows()
	}
	mv.ConnsLeft = pm.conns.Len()
	if derr := hc.Send(handover.Message{Kind: handover.Done, Count: uint32(mv.ConnsLeft)}, nil); err == nil && derr != nil && mv.Conns+mv.Flows > 0 {
		err = derr // the new process has what moved: this only loses it a count
	}
	return mv, err
}

// errRefused: the new process, alive, said no to a batch.
var errRefused = errors.New("the new process refused")

// sendBatch sends one batch and waits for its acknowledgement.
func sendBatch(hc *handover.Conn, m handover.Message, fds []int, n int) error {
	if err := hc.Send(m, fds); err != nil {
		return err
	}
	ack, _, err := hc.Recv()
	switch {
	case err != nil:
		return fmt.Errorf("no acknowledgement of %d connections: %w", n, err)
	case ack.Kind == handover.Refuse:
		return fmt.Errorf("%w %d connections: %s", errRefused, n, ack.Note)
	case ack.Kind != handover.Ack:
		return fmt.Errorf("a %s for %d connections", ack.Kind, n)
	}
	// An Ack of fewer than n (the new process stopped meanwhile) still
	// means it took the batch: those it could not serve it closed, and
	// none may be read here again beside it.
	return nil
}

// AdoptConnections takes the connections the old process sends over hc
// after this one acknowledged its listeners, until its Done (or its
// close: an old binary moves none). Each batch is adopted whole or
// refused whole (the old process keeps it): refused when this process
// serves without event loops, or when its descriptors would cut into
// fdReserve. It returns how many it took and how many the old process
// kept to drain, and counts them (protoplex_upgrade_*) with the time
// since start.
func (pm *ProtocolManager) AdoptConnections(hc *handover.Conn, start time.Time) (moved, left int, err error) {
	var flows flowsIn
	defer func() {
		pm.udp.Release() // read the UDP listeners, whatever came of the flows
		pm.stats.UpgradeMoved(moved, left, time.Since(start))
		pm.stats.UpgradeFlows(flows.moved, flows.left)
		if flows.moved > 0 || flows.left > 0 {
			pm.log.Info("upgrade: udp flows moved in", "moved", flows.moved, "left_in_old_process", flows.left)
		}
	}()
	var p *evloop.Plane
	if s := pm.settings.Load(); s.DataPlane != config.DataPlaneGoroutines {
		if p = pm.loops.Acquire(s.EventLoops); p != nil {
			defer pm.loops.Release(false)
		}
	}
	for {
		m, files, err := hc.Recv()
		if errors.Is(err, io.EOF) {
			return moved, left, nil
		}
		if err != nil {
			return moved, left, err
		}
		switch m.Kind {
		case handover.Done:
			return moved, int(m.Count), nil
		case handover.Conns:
		case handover.Flows:
			if err := pm.adoptFlows(hc, m, files, &flows); err != nil {
				return moved, left, err
			}
			continue
		default:
			closeFiles(files)
			return moved, left, fmt.Errorf("a %s message among the connections", m.Kind)
		}
		var n int
		var why error
		switch free := fdsFree(); {
		case p == nil:
			closeFiles(files)
			why = errors.New("this process serves without event loops (server.data_plane)")
		case free-len(files) < fdReserve:
			closeFiles(files)
			why = fmt.Errorf("%d descriptors would leave %d free of the open-files limit, under the %d kept for new connections", len(files), free-len(files), fdReserve)
		default:
			n, why = p.Adopt(m, files)
		}
		if why != nil && n == 0 {
			pm.log.Warn("upgrade: connections refused, the old process keeps them", "err", why)
			if err := hc.Send(handover.Message{Kind: handover.Refuse, Note: truncate(why.Error(), handover.MaxNote)}, nil); err != nil {
				return moved, left, err
			}
			continue
		}
		moved += n
		if err := hc.Send(handover.Message{Kind: handover.Ack, Count: uint32(n)}, nil); err != nil {
			return moved, left, err
		}
	}
}

// fdsFree is how many more descriptors this process may open.
func fdsFree() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return int(min(lim.Cur, 1<<31)) - len(ents)
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
