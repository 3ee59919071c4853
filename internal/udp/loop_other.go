//go:build !linux

package udp

import (
	"net/netip"
	"time"
)

// driver: listeners run on event loops on Linux only.
type driver struct{ lp Loop }

func (ln *listener) onLoop(Loop) bool { return false }

func (ln *listener) leaveLoop() {}

func (ln *listener) startLoop() {}

func (ln *listener) stopLoop() {}

func (ln *listener) watchUp(*flow) {}

func (ln *listener) sendLoop(*flow, []byte, int) {}

func (ln *listener) queueLoop(*flow, []byte, int) bool { return false }

func (ln *listener) queueUp(*flow, []byte) bool { return false }

func (ln *listener) flushUp() {}

func (ln *listener) sent(*flow) {}

func (ln *listener) dialLoop(netip.AddrPort, upSocket) (upConn, error) { return nil, errNoRawConn }

func (ln *listener) attachUp(*flow) {}

func (ln *listener) ask(*flow, []byte) bool { return true }

func (ln *listener) upFor(*Route, netip.AddrPort, time.Time) (upConn, error) {
	return nil, errNoRawConn
}

func (ln *listener) recycle(*flow) bool { return false }

func (ln *listener) sweepPool(time.Time) {}
