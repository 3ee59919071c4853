package udp

import (
	"slices"
	"testing"
)

// The upstream socket is set up by the route: flows that end when
// answered (udp_responses, DNS by default) keep the kernel's defaults and
// pay no system call for them; flows that carry a stream get flowBuffer
// and UDP_GRO.
func TestUpSocketFor(t *testing.T) {
	for _, c := range []struct {
		responses int
		want      upSocket
	}{
		{responses: 1, want: upSocket{}},                              // DNS: a query, its answer
		{responses: 3, want: upSocket{}},                              // a request, three datagrams back
		{responses: 0, want: upSocket{rcvbuf: flowBuffer, gro: true}}, // QUIC, WireGuard: no limit
	} {
		if got := upSocketFor(c.responses); got != c.want {
			t.Errorf("upSocketFor(%d) = %+v, want %+v", c.responses, got, c.want)
		}
	}
	if flowBuffer < 1<<20 {
		t.Errorf("flowBuffer %d holds less than one QUIC server's burst", flowBuffer)
	}
}

// A train read with UDP_GRO counts as its datagrams, and is cut back into
// them when it cannot be sent whole.
func TestSegments(t *testing.T) {
	for _, c := range []struct {
		n, seg int
		want   []int // the datagrams' sizes
	}{
		{n: 1200, seg: 0, want: []int{1200}},
		{n: 0, seg: 0, want: []int{0}},
		{n: 1200, seg: 1200, want: []int{1200}},
		{n: 13200, seg: 1200, want: slices.Repeat([]int{1200}, 11)},
		{n: 13243, seg: 1200, want: append(slices.Repeat([]int{1200}, 11), 43)},
		{n: 500, seg: 1200, want: []int{500}},
	} {
		if got := segments(c.n, c.seg); got != len(c.want) {
			t.Errorf("segments(%d, %d) = %d, want %d", c.n, c.seg, got, len(c.want))
		}
		if c.seg == 0 {
			continue
		}
		var got []int
		eachSegment(make([]byte, c.n), c.seg, func(b []byte) { got = append(got, len(b)) })
		if !slices.Equal(got, c.want) {
			t.Errorf("eachSegment(%d bytes, %d) = %v, want %v", c.n, c.seg, got, c.want)
		}
	}
}
