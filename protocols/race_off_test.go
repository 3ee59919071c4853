//go:build !race

package protocols

// raceEnabled: see race_on_test.go.
const raceEnabled = false
