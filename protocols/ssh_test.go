package protocols

import (
	"testing"

	"github.com/darkit/protoplex/protocols/protocoltest"
)

func FuzzSSH(f *testing.F) {
	fuzzCore(f, detectSSH, nil, fuzzSeeds(f, []string{"ssh-"}, "SSH-1.99-x\r\n")...)
}

func BenchmarkDetectSSH(b *testing.B) {
	benchDetect(b, detectSSH, protocoltest.Flight(b, "ssh-openssh.bin"), Match)
}
