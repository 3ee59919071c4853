//go:build race

package protocols

// raceEnabled: the race detector slows detectors down about tenfold, so the
// long false-positive run uses its short N under -race.
const raceEnabled = true
