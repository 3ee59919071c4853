package cluster

import (
	"encoding/json"
	"maps"
	"net/netip"
	"strings"
	"time"
)

// event is one key change as the reducer sees it: a watch event, or a key
// of a snapshot. It carries no client type, so the reducer is tested with
// plain values.
type event struct {
	Delete bool
	Key    string
	Value  []byte
	ModRev int64
	Lease  int64
}

// ban is a shared ban as stored: the duration it was published with, and
// the lease that ends it.
type ban struct {
	D      time.Duration
	Lease  int64
	ModRev int64
}

// state is what the node knows of the cluster. apply and replace are pure:
// no I/O, no clock; the node performs what they return (handler calls,
// lease look-ups, the status write) at its edge.
type state struct {
	configKey string
	services  map[string]map[string]Service // protocol → instance → service
	nodes     map[string]NodeInfo
	bans      map[netip.Addr]ban
	configRev int64 // ModRevision of the configuration last handed over
	config    []byte
}

func newState(configKey string) *state {
	return &state{configKey: configKey, services: map[string]map[string]Service{}, nodes: map[string]NodeInfo{}, bans: map[netip.Addr]ban{}}
}

// banChange is a ban to enforce (D > 0) or to lift (Unban).
type banChange struct {
	IP    netip.Addr
	D     time.Duration
	Lease int64 // the key's lease: a ban read by a snapshot lasts only what remains of it
	Unban bool
}

// changes says what an apply changed, and only that: nothing is notified
// for a key rewritten with what it held.
type changes struct {
	Services, Nodes bool
	Bans            []banChange
	Config          []byte // the new shared configuration; nil when unchanged
	Ignored         int    // entries over a bound
	Malformed       int
}

func (c changes) any() bool {
	return c.Services || c.Nodes || len(c.Bans) > 0 || c.Config != nil
}

// apply folds events, in order, into s and returns what changed.
func (s *state) apply(evs []event) changes {
	var c changes
	for _, ev := range evs {
		s.applyOne(ev, &c)
	}
	return c
}

func (s *state) applyOne(ev event, c *changes) {
	key := ev.Key
	switch {
	case strings.HasPrefix(key, ServicesPrefix):
		proto, inst, ok := strings.Cut(strings.TrimPrefix(key, ServicesPrefix), "/")
		if !ok {
			return
		}
		m := s.services[proto]
		if ev.Delete {
			if _, known := m[inst]; !known {
				return
			}
			delete(m, inst)
			if len(m) == 0 {
				delete(s.services, proto)
			}
			c.Services = true
			return
		}
		var sv Service
		if err := json.Unmarshal(ev.Value, &sv); err != nil || sv.Address == "" {
			c.Malformed++
			return
		}
		sv.Protocol, sv.Instance = proto, inst
		old, known := m[inst]
		if known && sameService(old, sv) {
			return
		}
		if (m == nil && len(s.services) >= MaxProtocols) || (!known && len(m) >= MaxServicesPerProtocol) {
			c.Ignored++
			return
		}
		if m == nil {
			m = map[string]Service{}
			s.services[proto] = m
		}
		m[inst] = sv
		c.Services = true
	case strings.HasPrefix(key, NodesPrefix):
		id := strings.TrimPrefix(key, NodesPrefix)
		old, known := s.nodes[id]
		if ev.Delete {
			if known {
				delete(s.nodes, id)
				c.Nodes = true
			}
			return
		}
		var info NodeInfo
		if json.Unmarshal(ev.Value, &info) != nil {
			c.Malformed++
			return
		}
		switch {
		case known && old.ID == info.ID && old.Address == info.Address && old.Version == info.Version && old.Started.Equal(info.Started):
		case !known && len(s.nodes) >= MaxNodes:
			c.Ignored++
		default:
			s.nodes[id] = info
			c.Nodes = true
		}
	case strings.HasPrefix(key, BansPrefix):
		ip, err := netip.ParseAddr(strings.TrimPrefix(key, BansPrefix))
		if err != nil {
			c.Malformed++
			return
		}
		old, known := s.bans[ip]
		if ev.Delete {
			if known {
				delete(s.bans, ip)
				c.Bans = append(c.Bans, banChange{IP: ip, Unban: true})
			}
			return
		}
		d, err := time.ParseDuration(string(ev.Value))
		switch {
		case err != nil || d <= 0:
			c.Malformed++
		case known && old.ModRev == ev.ModRev:
		case !known && len(s.bans) >= MaxBans:
			c.Ignored++
		default:
			s.bans[ip] = ban{D: d, Lease: ev.Lease, ModRev: ev.ModRev}
			c.Bans = append(c.Bans, banChange{IP: ip, D: d, Lease: ev.Lease})
		}
	case s.configKey != "" && key == s.configKey:
		// A deleted configuration leaves the running one serving.
		if ev.Delete || ev.ModRev == s.configRev {
			return
		}
		s.configRev, s.config = ev.ModRev, ev.Value
		c.Config = ev.Value
	}
}

// replace makes s the state a snapshot of every key holds (a first read,
// or a re-read after a compaction) and returns what differs from before:
// keys gone from the snapshot are deletions, the others puts.
func (s *state) replace(snapshot []event) changes {
	next := newState(s.configKey)
	next.configRev, next.config = s.configRev, s.config
	c := next.apply(snapshot)
	c.Services = !sameServices(s.services, next.services)
	c.Nodes = !maps.EqualFunc(s.nodes, next.nodes, func(a, b NodeInfo) bool {
		return a.ID == b.ID && a.Address == b.Address && a.Version == b.Version && a.Started.Equal(b.Started)
	})
	bans := c.Bans[:0]
	for _, b := range c.Bans {
		if old, ok := s.bans[b.IP]; !ok || old.ModRev != next.bans[b.IP].ModRev {
			bans = append(bans, b)
		}
	}
	for ip := range s.bans {
		if _, ok := next.bans[ip]; !ok {
			bans = append(bans, banChange{IP: ip, Unban: true})
		}
	}
	c.Bans = bans
	*s = *next
	return c
}

func sameService(a, b Service) bool {
	return a.Protocol == b.Protocol && a.Instance == b.Instance && a.Address == b.Address && a.Weight == b.Weight && maps.Equal(a.Metadata, b.Metadata)
}

func sameServices(a, b map[string]map[string]Service) bool {
	return maps.EqualFunc(a, b, func(x, y map[string]Service) bool { return maps.EqualFunc(x, y, sameService) })
}
