package protocols

import "testing"

func TestSSHDetect(t *testing.T) {
	runDetectCases(t, detectSSH, []detectCase{
		{"openssh", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", Match},
		{"bare prefix", "SSH-2.0-", Match},
		{"1.99", "SSH-1.99-Cisco-1.25\r\n", Match},
		{"putty", "SSH-2.0-PuTTY_Release_0.78\r\n", Match},
		{"prefix", "SSH-2.", NeedMore},
		{"prefix 1", "SSH-1", NeedMore},
		{"empty", "", NeedMore},
		{"ssh1 only", "SSH-1.5-old\r\n", NoMatch},
		{"lower", "ssh-2.0-x\r\n", NoMatch},
		{"select", "SELECT 1\r\n", NoMatch},
		{"http", "GET / HTTP/1.1\r\n", NoMatch},
	})
	if p := NewSSHProtocol("x:1"); p.Name != "SSH" || string(p.FirstBytes) != "S" {
		t.Fatalf("unexpected protocol %+v", p)
	}
}

func FuzzSSH(f *testing.F) {
	fuzzCore(f, detectSSH, nil, fuzzSeeds(f, []string{"ssh-"}, "SSH-1.99-x\r\n")...)
}

func BenchmarkDetectSSH(b *testing.B) {
	benchDetect(b, detectSSH, coreFlight(b, "ssh-openssh.bin"), Match)
}
