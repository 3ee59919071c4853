package metrics

import "github.com/prometheus/client_golang/prometheus"

// UDP is the UDP engine's collectors (protoplex_udp_*). Per-protocol
// counters are resolved once per route by UDP.Route.
type UDP struct {
	Active  prometheus.Gauge   // protoplex_udp_flows_active
	Idle    prometheus.Counter // protoplex_udp_flows_expired_total{reason="idle"}
	Evicted prometheus.Counter // protoplex_udp_flows_expired_total{reason="evicted"}

	flows     *prometheus.CounterVec
	datagrams *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	refused   *prometheus.CounterVec
	refusedBy map[string]prometheus.Counter // read-only after newUDP
}

// UDPRefusedReasons are the reason label values of
// protoplex_udp_refused_total, present at zero from the start.
var UDPRefusedReasons = []string{"no_match", "timeout", "blacklist", "rate_limit", "per_ip_limit", "ddos_ban", "guard_full", "per_source_limit", "pending_full", "dial_error", "evicted"}

// UDPRoute is one protocol's UDP counters.
type UDPRoute struct {
	Flows                  prometheus.Counter // flows created
	DatagramsUp, BytesUp   prometheus.Counter // client → backend
	DatagramsDn, BytesDown prometheus.Counter // backend → client
}

func newUDP(reg *prometheus.Registry) *UDP {
	u := &UDP{
		Active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "protoplex_udp_flows_active", Help: "UDP flows in the flow table now (identified or still identifying)."}),
		flows:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_flows_total", Help: "UDP flows created (routed to a backend), by protocol."}, []string{"protocol"}),
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_datagrams_total", Help: "UDP datagrams forwarded, by protocol and direction."},
			[]string{"protocol", "direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_bytes_total", Help: "UDP payload bytes forwarded, by protocol and direction."},
			[]string{"protocol", "direction"}),
		refusedBy: map[string]prometheus.Counter{},
		refused:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_refused_total", Help: "New UDP flows refused or dropped, by reason."}, []string{"reason"}),
	}
	expired := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "protoplex_udp_flows_expired_total", Help: "UDP flows ended, by reason (idle: idle timeout; evicted: the table was full)."}, []string{"reason"})
	u.Idle, u.Evicted = expired.WithLabelValues("idle"), expired.WithLabelValues("evicted")
	for _, r := range UDPRefusedReasons {
		u.refusedBy[r] = u.refused.WithLabelValues(r)
	}
	reg.MustRegister(u.Active, u.flows, u.datagrams, u.bytes, u.refused, expired)
	return u
}

// Route resolves protocol's UDP counters.
func (u *UDP) Route(protocol string) *UDPRoute {
	return &UDPRoute{
		Flows:       u.flows.WithLabelValues(protocol),
		DatagramsUp: u.datagrams.WithLabelValues(protocol, "client_to_backend"),
		BytesUp:     u.bytes.WithLabelValues(protocol, "client_to_backend"),
		DatagramsDn: u.datagrams.WithLabelValues(protocol, "backend_to_client"),
		BytesDown:   u.bytes.WithLabelValues(protocol, "backend_to_client"),
	}
}

// Refused is the counter of new flows refused or dropped for reason.
func (u *UDP) Refused(reason string) prometheus.Counter {
	if c, ok := u.refusedBy[reason]; ok {
		return c
	}
	return u.refused.WithLabelValues(reason)
}
