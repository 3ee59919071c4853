package protocols

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzCatalogue: every built-in detector decides a buffer's prefixes as it
// decides the whole buffer (a decision, once made, never changes).
func FuzzCatalogue(f *testing.F) {
	files, _ := filepath.Glob("testdata/flights/*.bin")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	ds := Descriptors()
	detectors := make([]DetectFunc, len(ds))
	for i, d := range ds {
		detectors[i] = d.New("x:1").Spec().Detect
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, detect := range detectors {
			name := ds[i].Name
			whole := detect(data)
			for k := 0; k <= len(data); k++ {
				if r := detect(data[:k]); r != NeedMore {
					if r != whole {
						t.Fatalf("%s: prefix %d says %v, whole says %v", name, k, r, whole)
					}
					break
				}
			}
		}
	})
}
