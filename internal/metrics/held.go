package metrics

import (
	"runtime"
	"sync"
)

// Series labelled by route, protocol or target are deleted when nothing
// can count into them any more, so that reloads that rename or remove
// routes (or etcd discovery that churns targets) leave a registry the
// size of the live configuration, not of every configuration ever served.
//
// "Nothing can count into them" is reachability: a series is held by the
// objects whose counters it is (a Route, a backend set's dial observer, a
// UDPRoute), and such an object is reachable exactly while a live routing
// snapshot, a backend set or a connection or flow still draining holds it.
// When the garbage collector finds it unreachable, its cleanup releases
// its series; the last release deletes one. So a reload never deletes the
// counters of a route whose connections are still draining into them, no
// connection path has to pair a "start" with an "end" call (the goroutine
// and event-loop data planes, handlers, connections moved in by an
// upgrade), and a series held by two objects at once (a target in the old
// and the new backend set of a route across a reload, a Route made again
// before the collected one's cleanup ran) lives on while either is. The
// price: a series outlives its last holder until the next collection
// (the runtime forces one at least every two minutes, unless GOGC=off
// without a memory limit).

// holds counts, per series, the live objects holding it.
type holds struct {
	mu sync.Mutex
	n  map[heldKey]int
}

// heldKey is one series: its vector and label values.
type heldKey struct {
	vec    deleter
	labels [3]string
	n      int // label values used
}

type deleter interface {
	DeleteLabelValues(...string) bool
}

// vector is a Prometheus vector of M (Counter, Observer, Gauge).
type vector[M any] interface {
	deleter
	WithLabelValues(...string) M
}

// held is the series one object holds, released when it is collected.
type held struct {
	h    *holds
	mu   sync.Mutex
	keys []heldKey
}

// track returns the holder of obj's series: they are released when obj is
// collected. obj must not be reachable from the holder.
func track[T any](obj *T, h *holds) *held {
	k := &held{h: h}
	runtime.AddCleanup(obj, (*held).release, k)
	return k
}

// hold returns vec's series of labels (at most 3), held by k.
func hold[M any](k *held, vec vector[M], labels ...string) M {
	key := heldKey{vec: vec, n: len(labels)}
	copy(key.labels[:], labels)
	k.mu.Lock()
	k.keys = append(k.keys, key)
	k.mu.Unlock()
	// Under h.mu, so that the series is not deleted by a release between
	// this count and its creation.
	k.h.mu.Lock()
	defer k.h.mu.Unlock()
	if k.h.n == nil {
		k.h.n = map[heldKey]int{}
	}
	k.h.n[key]++
	return vec.WithLabelValues(labels...)
}

// release drops k's hold on each of its series, deleting those it held
// last.
func (k *held) release() {
	k.mu.Lock()
	keys := k.keys
	k.keys = nil
	k.mu.Unlock()
	k.h.mu.Lock()
	defer k.h.mu.Unlock()
	for _, key := range keys {
		if k.h.n[key]--; k.h.n[key] > 0 {
			continue
		}
		delete(k.h.n, key)
		key.vec.DeleteLabelValues(key.labels[:key.n]...)
	}
}

// len is how many series are held, for tests.
func (h *holds) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.n)
}
