package protocols

import (
	"testing"

	"github.com/darkit/protoplex/internal/testnet"
)

func FuzzSSH(f *testing.F) {
	fuzzCore(f, detectSSH, nil, fuzzSeeds(f, []string{"ssh-"}, "SSH-1.99-x\r\n")...)
}

func BenchmarkDetectSSH(b *testing.B) {
	benchDetect(b, detectSSH, testnet.Flight(b, "ssh-openssh.bin"), Match)
}
