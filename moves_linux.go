package protoplex

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/darkit/protoplex/internal/config"
	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/handover"
	"golang.org/x/sys/unix"
)

// Moving established connections during an upgrade (cmd/protoplex:
// SIGUSR2), once the new process has acknowledged the listeners. The
// event loops' connections move in every state from a PROXY header being
// read to forwarding (internal/evloop move_linux.go), then the loops' UDP
// flows (moveflows_linux.go); everything else (in-process handlers, the
// goroutine data plane) drains in the old process as on SIGTERM.
//
// Each batch is a three-step exchange, so that no socket is ever read by
// both processes and none is lost: the old process sends the batch
// (Conns); the new one checks it whole and answers that it can take it
// (Ack) or not (Refuse), its connections on no loop yet; the old one then
// commits (Ack) or, when the answer came too late or not at all, takes the
// batch back and ends the phase (Done), and the new one closes what it was
// sent. On the commit the new one puts the batch on its loops unread
// (every step that can fail), says so (Adopted) and only then reads it;
// the old one closes its copies on that word, and on anything else (a
// Refuse, the new process's death, a timeout) takes the batch back. A
// seqpacket message arrives whole or not at all, and once the old process
// stopped waiting it shuts the way (CloseRead): the new process's Adopted
// is either read by it or fails to send.

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
			if err = pm.sendBatch(hc, b.Msg, b.FDs, b.Len()); err != nil {
				p.Restore(b)
				break
			}
			p.Moved(b)
			mv.Conns += b.Len()
		}
	}
	switch {
	case err == nil:
		mv.Flows, mv.FlowsLeft, err = pm.moveFlows(hc)
	case errors.Is(err, errRefused):
		// The new process said no to connections, but serves the UDP
		// listeners from the Done on: the flows still try, so that only
		// one process reads them.
		mv.Flows, mv.FlowsLeft, _ = pm.moveFlows(hc)
	default:
		if !handover.PeerGone(err) {
			// Alive (it did not answer in time): it reads the UDP
			// listeners from the Done on, so this process stops, and its
			// flows drain without them; only one process reads them.
			pm.udp.PauseListeners()
		}
		mv.FlowsLeft = pm.udp.Flows()
	}
	mv.ConnsLeft = pm.conns.Len()
	if derr := hc.Send(handover.Message{Kind: handover.Done, Count: uint32(mv.ConnsLeft)}, nil); err == nil && derr != nil && mv.Conns+mv.Flows > 0 {
		err = derr // the new process has what moved: this only loses it a count
	}
	return mv, err
}

// errRefused: the new process, alive, said no to a batch. errLate: it
// said yes too late to commit; it is alive too, and waits for the Done.
var (
	errRefused = errors.New("the new process refused")
	errLate    = errors.New("too late to commit")
)

// sendBatch sends one batch of n connections or flows, waits for the new
// process's word that it can take it, commits it and waits for its word
// that it adopted it. On error the new process reads none of the batch,
// which is still this process's.
func (pm *ProtocolManager) sendBatch(hc *handover.Conn, m handover.Message, fds []int, n int) error {
	sent := pm.upgradeNow()
	if err := hc.Send(m, fds); err != nil {
		return err
	}
	ack, files, err := hc.Recv()
	closeFiles(files)
	switch {
	case err != nil:
		return fmt.Errorf("no acknowledgement of a batch of %d: %w", n, err)
	case ack.Kind == handover.Refuse:
		return fmt.Errorf("%w a batch of %d: %s", errRefused, n, ack.Note)
	case ack.Kind != handover.Ack:
		return fmt.Errorf("a %s for a batch of %d", ack.Kind, n)
	}
	// The new process waits for the commit at most hc's timeout from its
	// answer: a commit sent later than half of it after the batch might
	// find it gone. Kept here instead; the Done that follows tells it.
	if late := pm.upgradeNow().Sub(sent); late > hc.Timeout()/2 {
		return fmt.Errorf("the acknowledgement of a batch of %d came after %v, %w", n, late.Round(time.Millisecond), errLate)
	}
	if err := hc.Send(handover.Message{Kind: handover.Ack, Count: uint32(n)}, nil); err != nil {
		return err
	}
	return awaitAdopted(hc, n)
}

// maxAfterShut bounds the messages awaitAdopted reads once it shut the
// way: far more than a socket's buffer holds.
const maxAfterShut = 1 << 12

// awaitAdopted waits for the new process's word that it adopted a
// committed batch of n (it reads none of it before it sent the word). On
// anything else (a Refuse, its close, an error, a timeout) it shuts the
// way for a later word (CloseRead: the new process's send fails, and it
// gives the batch up) and reads what came before it: without an Adopted
// there the batch is still this process's.
func awaitAdopted(hc *handover.Conn, n int) error {
	m, files, err := hc.Recv()
	closeFiles(files)
	switch {
	case err == nil && m.Kind == handover.Adopted:
		return nil
	case err == nil && m.Kind == handover.Refuse:
		return fmt.Errorf("%w a committed batch of %d: %s", errRefused, n, m.Note)
	case err == nil:
		err = fmt.Errorf("a %s", m.Kind)
	}
	_ = hc.CloseRead()
	for range maxAfterShut {
		m, files, rerr := hc.Recv()
		closeFiles(files)
		if rerr == nil && m.Kind == handover.Adopted {
			return nil // it came in time after all: the batch is the new process's
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, os.ErrDeadlineExceeded) || errors.Is(rerr, net.ErrClosed) {
			break
		}
	}
	return fmt.Errorf("no adoption of a committed batch of %d: %w", n, err)
}

// AdoptConnections takes the connections the old process sends over hc
// after this one acknowledged its listeners, until its Done (or its
// close: an old binary moves none). An old process of format 1 (the
// first release: hc.Version) sends Conns batches only, each adopted on
// receipt and acknowledged (adoptOnReceipt); its UDP flows stay with it,
// and this process reads its UDP listeners from the Done on. Each batch is checked whole, then
// adopted on the old process's commit, or refused whole (the old process
// keeps it): refused when this process serves without event loops, or
// when its descriptors would cut into fdReserve. A batch the old process
// does not commit (it gave up waiting), or whose adoption it was not told
// (commitBatch), is closed here, never read. It
// returns how many it took and how many the old process kept to drain,
// and counts them (protoplex_upgrade_*) with the time since start.
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
			ended, kept, err := pm.adoptFlows(hc, m, files, &flows)
			if err != nil || ended {
				return moved, kept, err
			}
			continue
		default:
			closeFiles(files)
			return moved, left, fmt.Errorf("a %s message among the connections", m.Kind)
		}
		var prep *evloop.Prepared
		var why error
		switch free := fdsFree(); {
		case p == nil:
			closeFiles(files)
			why = errors.New("this process serves without event loops (server.data_plane)")
		case free-len(files) < fdReserve:
			closeFiles(files)
			why = fmt.Errorf("%d descriptors would leave %d free of the open-files limit, under the %d kept for new connections", len(files), free-len(files), fdReserve)
		default:
			prep, why = p.Prepare(m, files)
		}
		if why != nil {
			pm.log.Warn("upgrade: connections refused, the old process keeps them", "err", why)
			if err := hc.Send(handover.Message{Kind: handover.Refuse, Note: truncate(why.Error(), handover.MaxNote)}, nil); err != nil {
				return moved, left, err
			}
			continue
		}
		if hc.Version() < handover.CommitVersion {
			n, err := pm.adoptOnReceipt(hc, prep)
			moved += n
			if err != nil {
				return moved, left, err
			}
			continue
		}
		n, kept, ended, err := pm.commitBatch(hc, prep)
		moved += n
		if err != nil || ended {
			return moved, kept, err
		}
	}
}

// adoptOnReceipt takes prep as an old process of format 1 (the first
// release) hands a batch over: with no commit, it closes its copies on
// this process's Ack. The batch is held on the loops (every step that can
// fail: on a failure the Refuse leaves it the old process's), then
// acknowledged, and read only once the Ack is sent; one that cannot be
// sent leaves it closed here, never read, as the old process then keeps
// it. (Format 1 cannot tell an Ack that arrived after the old process
// stopped waiting; format 2's commit exists for that.)
func (pm *ProtocolManager) adoptOnReceipt(hc *handover.Conn, prep prepared) (int, error) {
	if why := prep.Hold(); why != nil {
		pm.log.Warn("upgrade: connections cannot be adopted, the old process keeps them", "err", why)
		return 0, hc.Send(handover.Message{Kind: handover.Refuse, Note: truncate(why.Error(), handover.MaxNote)}, nil)
	}
	if err := hc.Send(handover.Message{Kind: handover.Ack, Count: uint32(prep.Len())}, nil); err != nil {
		prep.Discard()
		return 0, fmt.Errorf("the acknowledgement of a batch of %d not sent: %w", prep.Len(), err)
	}
	return prep.Start(), nil
}

// prepared is a batch checked whole, taken on the old process's commit:
// connections (evloop.Prepared) or UDP flows (udp.FlowAdoption).
type prepared interface {
	Len() int
	Hold() error
	Start() int
	Discard()
}

// commitBatch tells the old process this one can take prep, and adopts
// it on its commit: it holds the batch on its loops (every step that can
// fail), tells the old process (Adopted), then reads it. Anything else
// leaves prep closed, never read: a failed hold (Refused: the old process
// keeps the batch, and the phase goes on), an error, or the end of the
// phase (ended) — the old process's Done, with the connections it keeps,
// or its close.
func (pm *ProtocolManager) commitBatch(hc *handover.Conn, prep prepared) (n, kept int, ended bool, err error) {
	if err := hc.Send(handover.Message{Kind: handover.Ack, Count: uint32(prep.Len())}, nil); err != nil {
		prep.Discard()
		return 0, 0, false, err
	}
	m, files, err := hc.Recv()
	closeFiles(files)
	switch {
	case errors.Is(err, io.EOF):
		prep.Discard()
		return 0, 0, true, nil
	case err != nil:
		prep.Discard()
		return 0, 0, false, fmt.Errorf("no commit of a batch of %d: %w", prep.Len(), err)
	case m.Kind == handover.Done: // it gave up on the batch and keeps it
		prep.Discard()
		return 0, int(m.Count), true, nil
	case m.Kind != handover.Ack:
		prep.Discard()
		return 0, 0, false, fmt.Errorf("a %s instead of the commit of a batch of %d", m.Kind, prep.Len())
	}
	if why := prep.Hold(); why != nil {
		pm.log.Warn("upgrade: a committed batch cannot be adopted, the old process keeps it", "err", why)
		return 0, 0, false, hc.Send(handover.Message{Kind: handover.Refuse, Note: truncate(why.Error(), handover.MaxNote)}, nil)
	}
	if err := hc.Send(handover.Message{Kind: handover.Adopted, Count: uint32(prep.Len())}, nil); err != nil {
		// The old process did not get the word (it stopped waiting, or
		// went away): it keeps the batch, which nothing here read.
		prep.Discard()
		return 0, 0, false, fmt.Errorf("the adoption of a batch of %d not told: %w", prep.Len(), err)
	}
	return prep.Start(), 0, false, nil
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
