package protocols

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// checkDetector asserts detect(data) == want and the split-read property:
// the engine calls a detector on every growing prefix of a first flight
// (whatever the TCP segmentation), so a decision, once made on a prefix,
// must stay the same for every longer prefix, and no prefix of a matching
// flight may be rejected.
func checkDetector(t *testing.T, name string, detect DetectFunc, data []byte, want Result) {
	t.Helper()
	if got := detect(data); got != want {
		t.Fatalf("%s: detect(%q) = %v, want %v", name, truncate(data), got, want)
	}
	checkMonotonic(t, name, detect, data)
}

// checkMonotonic asserts that once a prefix of data gets a final answer,
// every longer prefix gets the same one.
func checkMonotonic(t *testing.T, name string, detect DetectFunc, data []byte) {
	t.Helper()
	decided := NeedMore
	for i := 0; i <= len(data); i++ {
		r := detect(data[:i])
		if decided != NeedMore && r != decided {
			t.Fatalf("%s: prefix of %d bytes says %v after a shorter prefix said %v (data %q)", name, i, r, decided, truncate(data))
		}
		if r != NeedMore {
			decided = r
		}
	}
}

// checkInspectMonotonic asserts that once a prefix of data gets ok from
// inspect, every longer prefix gets ok and the same metadata.
func checkInspectMonotonic(t *testing.T, name string, inspect InspectFunc, data []byte) {
	t.Helper()
	var first Metadata
	decided := false
	for i := 0; i <= len(data); i++ {
		md, ok := inspect(data[:i])
		if decided && (!ok || !reflect.DeepEqual(md, first)) {
			t.Fatalf("%s: inspect of %d bytes = %+v, %v after a shorter prefix gave %+v", name, i, md, ok, first)
		}
		if ok && !decided {
			first, decided = md, true
		}
	}
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// builtin returns the protocol the registry builds for name.
func builtin(t testing.TB, name string) *Protocol {
	t.Helper()
	d, ok := Describe(name)
	if !ok {
		t.Fatalf("%s is not registered", name)
	}
	return d.New("x:1")
}

// fuzzCore fuzzes a detector (and its inspector, if any): no panic, data not
// modified, and a final answer on a prefix (split at a random point) is the
// answer on the whole input, as is an inspector's ok metadata.
func fuzzCore(f *testing.F, detect DetectFunc, inspect InspectFunc, seeds ...[]byte) {
	f.Helper()
	for _, s := range seeds {
		f.Add(s, uint(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		orig := bytes.Clone(data)
		k := int(split % uint(len(data)+1))
		whole, part := detect(data), detect(data[:k])
		if part != NeedMore && part != whole {
			t.Fatalf("detect: %d of %d bytes say %v, all say %v", k, len(data), part, whole)
		}
		if inspect != nil {
			md, ok := inspect(data)
			mdk, okk := inspect(data[:k])
			if okk && (!ok || !reflect.DeepEqual(md, mdk)) {
				t.Fatalf("inspect: %d of %d bytes give %+v, all give %+v, %v", k, len(data), mdk, md, ok)
			}
		}
		if !bytes.Equal(data, orig) {
			t.Fatalf("data modified")
		}
	})
}

// fuzzSeeds returns the recorded flights whose names start with one of
// prefixes, plus extra.
func fuzzSeeds(f *testing.F, prefixes []string, extra ...string) [][]byte {
	var out [][]byte
	for _, p := range prefixes {
		for _, b := range testnet.Flights(f, p) {
			out = append(out, b)
		}
	}
	for _, e := range extra {
		out = append(out, []byte(e))
	}
	return out
}

// benchDetect reports the cost of one detector call on data, which must
// give want.
func benchDetect(b *testing.B, detect DetectFunc, data []byte, want Result) {
	b.Helper()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if got := detect(data); got != want {
			b.Fatalf("got %v, want %v", got, want)
		}
	}
}
