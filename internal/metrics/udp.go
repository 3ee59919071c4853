package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/darkit/protoplex/internal/guard"
)

// UDP is the UDP engine's collectors (protoplex_udp_*). Per-protocol
// counters are resolved once per route by UDP.Route.
type UDP struct {
	Active   prometheus.Gauge   // protoplex_udp_flows_active
	Idle     prometheus.Counter // protoplex_udp_flows_expired_total{reason="idle"}
	Evicted  prometheus.Counter // protoplex_udp_flows_expired_total{reason="evicted"}
	Answered prometheus.Counter // protoplex_udp_flows_expired_total{reason="answered"}
	Pooled   prometheus.Gauge   // protoplex_udp_pooled_sockets

	flows     *prometheus.CounterVec
	datagrams *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	refusedBy [numUDPRefusals]prometheus.Counter
	droppedBy [numUDPDrops]prometheus.Counter
	holds     *holds // the Stats' (held.go)
}

// UDPDrop is a reason of protoplex_udp_dropped_total: why a datagram of a
// routed flow was dropped. Every value is a series from the start.
type UDPDrop uint8

// The reasons of protoplex_udp_dropped_total.
const (
	UDPStaleReply         UDPDrop = iota // a reply that answers no query of its flow (DNS): a late or duplicate one of an earlier flow on a reused socket
	UDPIdleSocket                        // a datagram on an upstream socket waiting in the pool, with no flow
	UDPUncheckedQuery                    // a query the guard cannot follow: not a whole DNS message, or too many unanswered on the flow
	UDPSendFailed                        // a reply to a client the kernel refused to send (a firewall's EPERM, ENOBUFS, a full send buffer, a destination it rejects)
	UDPUpstreamSendFailed                // a datagram to a backend the kernel refused to send on the flow's upstream socket (as UDPSendFailed, or the ICMP error of an earlier one)
	numUDPDrops
)

var udpDropNames = [numUDPDrops]string{"stale_reply", "idle_socket", "unchecked_query", "send_failed", "upstream_send_failed"}

func (d UDPDrop) String() string {
	if d < numUDPDrops {
		return udpDropNames[d]
	}
	return "unknown"
}

// UDPDrops returns every reason, in order.
func UDPDrops() []UDPDrop {
	out := make([]UDPDrop, numUDPDrops)
	for i := range out {
		out[i] = UDPDrop(i)
	}
	return out
}

// Dropped is the counter of datagrams dropped for d.
func (u *UDP) Dropped(d UDPDrop) prometheus.Counter {
	return u.droppedBy[min(d, numUDPDrops-1)]
}

// UDPRefusal is a reason of protoplex_udp_refused_total: why a new flow
// was refused, or an undecided one dropped. Every value is a series from
// the start, and there is no other: a label is never made from a string.
type UDPRefusal uint8

// The reasons of protoplex_udp_refused_total.
const (
	UDPNoMatch     UDPRefusal = iota // no route takes the flow's datagrams
	UDPTimeout                       // still undecided after udp.MaxWait, and no fallback
	UDPBlacklist                     // the guard's reasons, as for TCP
	UDPRateLimit                     //
	UDPPerIPLimit                    //
	UDPBanned                        //
	UDPGuardFull                     //
	UDPPerSource                     // server.max_udp_flows_per_source
	UDPPendingFull                   // the datagrams held while identifying reached their bound
	UDPDialError                     // no target of the route could be had
	UDPEvicted                       // an undecided flow ended for room in a full table
	UDPTableFull                     // max_udp_flows reached, and every flow is another listener's
	numUDPRefusals
)

var udpRefusalNames = [numUDPRefusals]string{
	"no_match", "timeout",
	guard.Blacklisted.String(), guard.RateLimited.String(), guard.PerIPLimit.String(), guard.Banned.String(), guard.GuardFull.String(),
	"per_source_limit", "pending_full", "dial_error", "evicted", "table_full",
}

func (r UDPRefusal) String() string {
	if r < numUDPRefusals {
		return udpRefusalNames[r]
	}
	return "unknown"
}

// UDPRefusals returns every reason, in order.
func UDPRefusals() []UDPRefusal {
	out := make([]UDPRefusal, numUDPRefusals)
	for i := range out {
		out[i] = UDPRefusal(i)
	}
	return out
}

// UDPGuardRefusal is the reason of a flow the guard refused with r.
func UDPGuardRefusal(r guard.Reason) UDPRefusal {
	switch r {
	case guard.Blacklisted:
		return UDPBlacklist
	case guard.RateLimited:
		return UDPRateLimit
	case guard.PerIPLimit:
		return UDPPerIPLimit
	case guard.Banned:
		return UDPBanned
	}
	return UDPGuardFull
}

// UDPRoute is one protocol's UDP counters.
type UDPRoute struct {
	Flows                  prometheus.Counter // flows created
	DatagramsUp, BytesUp   prometheus.Counter // client → backend
	DatagramsDn, BytesDown prometheus.Counter // backend → client
}

func newUDP(reg *prometheus.Registry, h *holds) *UDP {
	u := &UDP{
		holds:  h,
		Active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "protoplex_udp_flows_active", Help: "UDP flows in the flow table now (identified or still identifying)."}),
		flows:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_flows_total", Help: "UDP flows created (routed to a backend), by protocol."}, []string{"protocol"}),
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_datagrams_total", Help: "UDP datagrams forwarded, by protocol and direction."},
			[]string{"protocol", "direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_bytes_total", Help: "UDP payload bytes forwarded, by protocol and direction."},
			[]string{"protocol", "direction"}),
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_refused_total", Help: "New UDP flows refused or dropped, by reason."}, []string{"reason"})
	expired := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_flows_expired_total",
		Help: "UDP flows ended, by reason (idle: idle timeout; evicted: the table was full; answered: udp_responses replies came back)."}, []string{"reason"})
	u.Idle, u.Evicted, u.Answered = expired.WithLabelValues("idle"), expired.WithLabelValues("evicted"), expired.WithLabelValues("answered")
	for i := range u.refusedBy {
		u.refusedBy[i] = refused.WithLabelValues(UDPRefusal(i).String())
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_dropped_total",
		Help: "Datagrams of routed UDP flows dropped, by reason (stale_reply, idle_socket, unchecked_query, send_failed, upstream_send_failed)."}, []string{"reason"})
	for i := range u.droppedBy {
		u.droppedBy[i] = dropped.WithLabelValues(UDPDrop(i).String())
	}
	u.Pooled = prometheus.NewGauge(prometheus.GaugeOpts{Name: "protoplex_udp_pooled_sockets",
		Help: "Upstream UDP sockets of answered DNS flows kept for the next flow to the same target."})
	reg.MustRegister(u.Active, u.Pooled, u.flows, u.datagrams, u.bytes, refused, expired, dropped)
	return u
}

// Route resolves protocol's UDP counters. Their series are held by the
// UDPRoute (held.go): a protocol's go once no UDP table or flow holds one
// of its UDPRoutes.
func (u *UDP) Route(protocol string) *UDPRoute {
	r := &UDPRoute{}
	k := track(r, u.holds)
	r.Flows = hold[prometheus.Counter](k, u.flows, protocol)
	r.DatagramsUp = hold[prometheus.Counter](k, u.datagrams, protocol, ClientToBackend)
	r.BytesUp = hold[prometheus.Counter](k, u.bytes, protocol, ClientToBackend)
	r.DatagramsDn = hold[prometheus.Counter](k, u.datagrams, protocol, BackendToClient)
	r.BytesDown = hold[prometheus.Counter](k, u.bytes, protocol, BackendToClient)
	return r
}

// Refused is the counter of new flows refused or dropped for r.
func (u *UDP) Refused(r UDPRefusal) prometheus.Counter {
	return u.refusedBy[min(r, numUDPRefusals-1)]
}
