package upstream

// AdoptDatagram is Adopt for a UDP flow another process routed to target
// (as configured): the attempt its passive health is reported under
// (DatagramReplied, DatagramSilent) and the release of its active count;
// a bare attempt, which reports nothing, and a nil release when the set
// has no such target any more.
func (s *Set) AdoptDatagram(target string) (Attempt, func()) {
	t := s.byAddr[target]
	if t == nil {
		return Attempt{Target: target}, nil
	}
	t.active.Add(1)
	return Attempt{Target: t.Addr, t: t}, t.done
}
