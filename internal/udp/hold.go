package udp

// Holding the listeners unread: during an upgrade the new process serves
// the UDP sockets the old one handed over, but reads none of them until
// the old process stopped reading them and its flows moved here (Release):
// meanwhile their datagrams wait in the kernel's queues, so none is read by
// both processes, and a moved flow's client never opens a second flow here
// from a new upstream port.

// Hold makes listeners started from now on wait, unread, until Release.
func (e *Engine) Hold() {
	e.mu.Lock()
	e.holding = true
	e.mu.Unlock()
}

// Release starts the listeners held since Hold, and those started later
// at once; it is safe to call more than once, and without Hold.
func (e *Engine) Release() {
	e.mu.Lock()
	e.holding = false
	held := e.held
	e.held = nil
	e.mu.Unlock()
	for _, ln := range held {
		ln.begin()
	}
}

// begin starts ln's owner, once: a loop watching its socket, or its
// reader goroutine.
func (ln *listener) begin() {
	if !ln.begun.CompareAndSwap(false, true) {
		return
	}
	if ln.drv != nil {
		ln.startLoop()
	} else {
		go ln.run()
	}
}
