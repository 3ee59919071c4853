//go:build unix

package main

import (
	"path/filepath"
	"regexp"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestSystemdUDPDropIn: deploy/systemd/udp.conf, installed as a drop-in of
// protoplex.socket, passes systemd-analyze verify and adds a datagram
// socket on the port of the unit's stream socket, as TestSocketActivationUDP
// serves them.
func TestSystemdUDPDropIn(t *testing.T) {
	analyze := testnet.RequireBinary(t, "systemd-analyze")
	dir, units := installUnits(t, "protoplex.socket", "udp.conf")
	setting := func(unit, key string) []string {
		var v []string
		for _, m := range regexp.MustCompile(`(?m)^`+key+`=(.*)$`).FindAllStringSubmatch(unit, -1) {
			v = append(v, m[1])
		}
		return v
	}
	stream, datagram := setting(units["protoplex.socket"], "ListenStream"), setting(units["udp.conf"], "ListenDatagram")
	if len(stream) != 1 || len(datagram) != 1 || stream[0] != datagram[0] {
		t.Fatalf("ListenStream=%q in protoplex.socket, ListenDatagram=%q in udp.conf: want one each, the same port", stream, datagram)
	}
	if got := setting(units["udp.conf"], "ReceiveBuffer"); len(got) > 0 {
		t.Fatalf("udp.conf sets ReceiveBuffer=%q, which would apply to the TCP socket too", got)
	}
	if out := verifyUnits(t, analyze, dir); len(out) > 0 {
		t.Fatalf("systemd-analyze verify with the drop-in:\n%s", out)
	}
	// A typo in the drop-in is caught: the check above is not vacuous.
	testnet.WriteFile(t, filepath.Join(dir, "protoplex.socket.d", "udp.conf"), "[Socket]\nListenDatagrm=443\n")
	if out := verifyUnits(t, analyze, dir); len(out) == 0 {
		t.Fatal("systemd-analyze verify took a misspelt drop-in")
	}
}
