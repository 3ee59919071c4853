//go:build linux

package protoplex

import (
	"net"
	"testing"
	"time"

	"github.com/darkit/protoplex/internal/evloop"
	"github.com/darkit/protoplex/internal/handover"
	"golang.org/x/sys/unix"
)

// firstRelease plays the old process of the first release (6abb019,
// handover format 1) on the raw socket: it writes and reads only
// format-1 frames, as that binary does.
type firstRelease struct {
	t  *testing.T
	uc *net.UnixConn
}

// firstReleasePair is a fake first-release old process and the handover
// end of the new one (this package's).
func firstReleasePair(t *testing.T) (*firstRelease, *handover.Conn) {
	t.Helper()
	nu, peer, err := handover.Pair(handover.Limits{Timeout: moveBound})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nu.Close() })
	nc, err := net.FileConn(peer)
	peer.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &firstRelease{t: t, uc: nc.(*net.UnixConn)}, nu
}

func (o *firstRelease) send(m handover.Message, fds []int) {
	o.t.Helper()
	b, err := handover.EncodeVersion(nil, 1, m)
	if err != nil {
		o.t.Fatal(err)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_ = o.uc.SetWriteDeadline(time.Now().Add(moveBound))
	if _, _, err := o.uc.WriteMsgUnix(b, oob, nil); err != nil {
		o.t.Fatal(err)
	}
}

// recv reads the new process's next message, which must be one the
// first release reads: framed as version 1.
func (o *firstRelease) recv() handover.Message {
	o.t.Helper()
	b := make([]byte, handover.MaxMessage)
	_ = o.uc.SetReadDeadline(time.Now().Add(moveBound))
	n, err := o.uc.Read(b)
	if err != nil {
		o.t.Fatal(err)
	}
	m, v, err := handover.DecodeVersion(b[:n])
	if err != nil || v != 1 {
		o.t.Fatalf("the new process wrote %+v in version %d (%v): the first release reads only version 1", m, v, err)
	}
	return m
}

// asFirstRelease rewrites a batch's connection states as the first
// release wrote them (ConnVersion 1).
func asFirstRelease(t *testing.T, b *evloop.Batch) handover.Message {
	t.Helper()
	m := b.Msg
	m.Records = append([]handover.Record(nil), m.Records...)
	for i, r := range m.Records {
		if len(r.Meta) == 0 {
			continue
		}
		st, err := handover.DecodeConn(r.Meta)
		if err != nil {
			t.Fatal(err)
		}
		if m.Records[i].Meta, err = handover.EncodeConnVersion(nil, 1, st); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// TestAdoptFromFirstRelease: an old process of the first release (format
// 1: no commit, no Adopted, no Flows; ConnVersion-1 states) hands a
// forwarding pair over: the new process reads its hello framed as 1, adopts
// the batch on receipt and acknowledges it in format 1, and the pair goes
// on in the new manager. Before format 1 was spoken again, the new process
// answered nothing a first release reads.
func TestAdoptFromFirstRelease(t *testing.T) {
	old, nu, _, _ := moveRig(t)
	c, r := forwarding(t, old)
	fake, hc := firstReleasePair(t)
	if err := hc.SendHello("protoplex test"); err != nil {
		t.Fatal(err)
	}
	if hello := fake.recv(); hello.Kind != handover.Hello {
		t.Fatalf("the hello: %+v", hello)
	}
	p := old.loops.Plane()
	batch := p.Detach(handover.MaxFDsPerMessage)
	if batch == nil || batch.Len() != 1 {
		t.Fatalf("detached %+v", batch)
	}
	ch := adoptAsync(nu, hc)
	fake.send(asFirstRelease(t, batch), batch.FDs)
	ack := fake.recv()
	if ack.Kind != handover.Ack || ack.Count != 1 {
		p.Restore(batch)
		t.Fatalf("the answer to a batch of 1: %+v", ack)
	}
	p.Moved(batch) // the first release closes its copies on the Ack
	fake.send(handover.Message{Kind: handover.Done}, nil)
	if got := waitAdopted(t, ch); got != (adopted{1, 0, nil}) {
		t.Fatalf("AdoptConnections: %+v", got)
	}
	if hc.Version() != 1 {
		t.Errorf("the new process agreed on version %d with a first release", hc.Version())
	}
	answers(t, c, r, "moved")
	if n := len(nu.loops.Plane().Connections(10)); n != 1 {
		t.Errorf("the new manager's loops hold %d connections", n)
	}
}

// TestAdoptFromFirstReleaseRefused: a batch the new process cannot take
// is refused in format 1, and the first release keeps it.
func TestAdoptFromFirstReleaseRefused(t *testing.T) {
	old, nu, _, _ := moveRig(t)
	c, r := forwarding(t, old)
	fake, hc := firstReleasePair(t)
	p := old.loops.Plane()
	batch := p.Detach(handover.MaxFDsPerMessage)
	if batch == nil {
		t.Fatal("nothing detached")
	}
	ch := adoptAsync(nu, hc)
	m := asFirstRelease(t, batch)
	m.Records[0].Meta[0] = 3 // a state version no release wrote
	fake.send(m, batch.FDs)
	refuse := fake.recv()
	p.Restore(batch)
	if refuse.Kind != handover.Refuse {
		t.Fatalf("the answer to a batch it cannot read: %+v", refuse)
	}
	fake.send(handover.Message{Kind: handover.Done, Count: 1}, nil)
	if got := waitAdopted(t, ch); got != (adopted{0, 1, nil}) {
		t.Fatalf("AdoptConnections: %+v", got)
	}
	answers(t, c, r, "kept")
	if n := old.conns.Len(); n != 1 {
		t.Errorf("the old manager tracks %d connections, want 1", n)
	}
}

// TestAdoptFromFirstReleaseGone: a first-release old process that went
// away after it sent a batch never gets the Ack: the new process closes
// the batch unread (the old one would have kept it), and says why.
func TestAdoptFromFirstReleaseGone(t *testing.T) {
	old, nu, _, _ := moveRig(t)
	c, r := forwarding(t, old)
	fake, hc := firstReleasePair(t)
	p := old.loops.Plane()
	batch := p.Detach(handover.MaxFDsPerMessage)
	if batch == nil {
		t.Fatal("nothing detached")
	}
	fake.send(asFirstRelease(t, batch), batch.FDs)
	fake.uc.Close() // gone before the answer: the batch is still queued for the new process
	p.Restore(batch)
	got := waitAdopted(t, adoptAsync(nu, hc))
	if got.moved != 0 || !handover.PeerGone(got.err) {
		t.Fatalf("AdoptConnections: %+v, want none moved and the old process gone", got)
	}
	if st := nu.loops.Plane().Connections(10); len(st) != 0 {
		t.Errorf("the new manager's loops hold %+v", st)
	}
	answers(t, c, r, "kept")
}
