package protocols

import "testing"

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

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// detectorOf returns the detector of the built-in registered as name.
func detectorOf(t testing.TB, name string) DetectFunc {
	t.Helper()
	d, ok := Describe(name)
	if !ok {
		t.Fatalf("%s is not registered", name)
	}
	return d.New("x:1").Spec().Detect
}
