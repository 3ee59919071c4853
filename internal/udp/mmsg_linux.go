package udp

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/darkit/protoplex/internal/rawsys"
)

// Datagrams in batches, one system call for many: a loop reads its
// listener's waiting datagrams, and the replies waiting on an upstream
// socket, with recvmmsg; the replies it forwards during one wake, to any
// number of clients, leave the listener's socket in one sendmmsg (each
// message has its own destination) when the loop is about to sleep, or
// when the batch is full. The headers, their buffers and addresses are
// made once per listener and reused: nothing is allocated per datagram.

const (
	// recvBatch is the datagrams one recvmmsg reads. Each has a slot of
	// maxDatagram bytes (a datagram is never cut), in memory mapped
	// outside the Go heap (offHeap): the kernel backs only the pages a
	// datagram was written to, so the slots cost address space, not
	// memory, and do not raise the garbage collector's heap goal.
	recvBatch = 32
	// sendBatch is the replies one sendmmsg sends at most.
	sendBatch = 64
	// sendArena is the bytes of payload a send batch holds: a batch that
	// has no room for the next reply is sent first. At least maxDatagram,
	// so any reply fits an empty batch.
	sendArena = 256 << 10
)

// rxBatch is the headers and slots of a recvmmsg.
type rxBatch struct {
	hdrs  [recvBatch]unix.Mmsghdr
	iovs  [recvBatch]unix.Iovec
	names [recvBatch]unix.RawSockaddrInet6
	buf   []byte // recvBatch slots of maxDatagram bytes
}

func newRxBatch() (*rxBatch, error) {
	buf, err := offHeap(recvBatch * maxDatagram)
	if err != nil {
		return nil, err
	}
	b := &rxBatch{buf: buf}
	for i := range b.hdrs {
		b.iovs[i].Base = &b.buf[i*maxDatagram]
		b.iovs[i].SetLen(maxDatagram)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	return b, nil
}

// offHeap is n bytes of private anonymous memory, outside the Go heap;
// freeOffHeap gives it back.
func offHeap(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

func freeOffHeap(b []byte) { _ = unix.Munmap(b) }

// free gives the slots back; b is not used again.
func (b *rxBatch) free() {
	freeOffHeap(b.buf)
	b.buf = nil
}

// prepare readies the first n headers for a read, with room for each
// datagram's source when names (a listener's read; an upstream socket's
// are connected: no source to learn).
func (b *rxBatch) prepare(n int, names bool) []unix.Mmsghdr {
	for i := range n {
		h := &b.hdrs[i]
		h.Len, h.Hdr.Flags = 0, 0
		if names {
			h.Hdr.Name, h.Hdr.Namelen = (*byte)(unsafe.Pointer(&b.names[i])), unix.SizeofSockaddrInet6
		} else {
			h.Hdr.Name, h.Hdr.Namelen = nil, 0
		}
	}
	return b.hdrs[:n]
}

// msg is datagram i of the last read and its source (invalid when the read
// asked for none, or the kernel gave another family).
func (b *rxBatch) msg(i int) ([]byte, netip.AddrPort) {
	h := &b.hdrs[i]
	d := b.buf[i*maxDatagram : i*maxDatagram+int(h.Len)]
	if h.Hdr.Name == nil || h.Hdr.Namelen < unix.SizeofSockaddrInet4 {
		return d, netip.AddrPort{}
	}
	return d, rawsys.AddrPort(&b.names[i])
}

// txBatch is replies waiting for one sendmmsg from a listener's socket:
// each a copy of its payload in arena, its client's address, and the flow
// it counts for once sent.
type txBatch struct {
	n     int
	hdrs  [sendBatch]unix.Mmsghdr
	iovs  [sendBatch]unix.Iovec
	names [sendBatch]unix.RawSockaddrInet6
	flows [sendBatch]*flow
	arena []byte
	used  int
}

func newTxBatch() (*txBatch, error) {
	arena, err := offHeap(sendArena)
	if err != nil {
		return nil, err
	}
	t := &txBatch{arena: arena}
	for i := range t.hdrs {
		t.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&t.names[i]))
		t.hdrs[i].Hdr.Iov = &t.iovs[i]
		t.hdrs[i].Hdr.SetIovlen(1)
	}
	return t, nil
}

// free gives the arena back; t is not used again.
func (t *txBatch) free() {
	t.reset()
	freeOffHeap(t.arena)
	t.arena = nil
}

// add queues a copy of b for to, from a socket of the family v6 says, for
// f; false when the batch is full or has no room for b: send it first.
func (t *txBatch) add(b []byte, to netip.AddrPort, v6 bool, f *flow) bool {
	if t.n == sendBatch || len(t.arena)-t.used < len(b) {
		return false
	}
	i := t.n
	copy(t.arena[t.used:], b)
	t.iovs[i].Base = unsafe.SliceData(t.arena[t.used:]) // not &arena[used]: an empty reply at the arena's end is one too
	t.iovs[i].SetLen(len(b))
	t.hdrs[i].Hdr.Namelen = uint32(rawsys.PutSockaddr(&t.names[i], to, v6))
	t.flows[i] = f
	t.used += len(b)
	t.n++
	return true
}

// reset empties the batch, forgetting its flows.
func (t *txBatch) reset() {
	clear(t.flows[:t.n])
	t.n, t.used = 0, 0
}

// sendEach sends messages 0..n-1 in order with send (a sendmmsg from
// message i on: how many went, or the error of message i) and tells done
// each message's fate. sendmmsg stops at the first message the kernel
// refuses and reports it on the next call: that one is lost (ok false, as
// a sendto's error loses its datagram) and the rest go on, so one bad
// client or a full buffer for a moment costs its own message, and at most
// one more call per message.
func sendEach(n int, send func(i int) (int, syscall.Errno), done func(i int, ok bool)) {
	for i := 0; i < n; {
		k, e := send(i)
		if e != 0 || k <= 0 {
			done(i, false)
			i++
			continue
		}
		for j := i; j < i+k && j < n; j++ {
			done(j, true)
		}
		i += k
	}
}
