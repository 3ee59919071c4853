//go:build unix

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

// TestSystemdUDPDropIn: deploy/systemd/udp.conf, installed as a drop-in of
// protoplex.socket, passes systemd-analyze verify and adds a datagram
// socket on the port of the unit's stream socket, as TestSocketActivationUDP
// serves them.
func TestSystemdUDPDropIn(t *testing.T) {
	analyze := testnet.RequireBinary(t, "systemd-analyze")
	dir := t.TempDir()
	units := map[string]string{}
	for _, name := range []string{"protoplex.service", "protoplex.socket", "udp.conf"} {
		unit, err := os.ReadFile(filepath.Join("../../deploy/systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		units[name] = string(unit)
		to := filepath.Join(dir, name)
		if name == "udp.conf" {
			to = filepath.Join(dir, "protoplex.socket.d", name)
			if err := os.Mkdir(filepath.Dir(to), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		testnet.WriteFile(t, to, strings.ReplaceAll(string(unit), "/usr/local/bin/protoplex", binary))
	}
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
	cmd := exec.Command(analyze, "verify", "--man=no", "protoplex.service", "protoplex.socket")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify with the drop-in: %v\n%s", err, out)
	}
	// A typo in the drop-in is caught: the check above is not vacuous.
	testnet.WriteFile(t, filepath.Join(dir, "protoplex.socket.d", "udp.conf"), "[Socket]\nListenDatagrm=443\n")
	cmd = exec.Command(analyze, "verify", "--man=no", "protoplex.service", "protoplex.socket")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); len(out) == 0 {
		t.Fatalf("systemd-analyze verify took a misspelt drop-in: %v", err)
	}
}
