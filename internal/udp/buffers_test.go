package udp

import "testing"

// The upstream socket's receive buffer is chosen by the route: flows that
// end when answered (udp_responses, DNS by default) keep the kernel's
// default and pay no system call for it; flows that carry a stream get
// flowBuffer.
func TestUpSocketFor(t *testing.T) {
	for _, c := range []struct {
		responses int
		want      upSocket
	}{
		{responses: 1, want: upSocket{}},                   // DNS: a query, its answer
		{responses: 3, want: upSocket{}},                   // a request, three datagrams back
		{responses: 0, want: upSocket{rcvbuf: flowBuffer}}, // QUIC, WireGuard: no limit
	} {
		if got := upSocketFor(c.responses); got != c.want {
			t.Errorf("upSocketFor(%d) = %+v, want %+v", c.responses, got, c.want)
		}
	}
	if flowBuffer < 1<<20 {
		t.Errorf("flowBuffer %d holds less than one QUIC server's burst", flowBuffer)
	}
}
