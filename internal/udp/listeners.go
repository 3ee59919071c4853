package udp

import (
	"context"
	"fmt"
	"net"
)

// Serve serves pc, a bound UDP socket (a server.listen_udp address, bound
// by the manager's listener set or passed by socket activation), until ctx
// ends or the engine closes; then pc is closed and its flows end. It
// closes pc in every case. The manager rebinds listen_udp on reload by
// starting and stopping Serve calls.
func (e *Engine) Serve(ctx context.Context, pc net.PacketConn) error {
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return fmt.Errorf("udp: Serve: a %T is not a UDP socket", pc)
	}
	ln := &listener{conn: conn, addr: conn.LocalAddr().String()}
	_ = conn.SetReadBuffer(listenerBuffer) // as listen does
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		conn.Close()
		return nil
	}
	e.lns = append(e.lns, ln)
	e.wg.Add(1)
	e.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { e.stopListener(ln) })
	defer stop()
	e.opt.Log.Info("protoplex listening", "addr", ln.addr, "transport", "udp")
	e.readLoop(ln) // until the socket is closed: ctx, the engine's Close
	e.stopListener(ln)
	return nil
}
