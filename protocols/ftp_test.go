package protocols

import "testing"

// FTP clients wait for the server's greeting, so client bytes never select
// FTP: only silence does.
func TestFTP(t *testing.T) {
	p := NewFTPProtocol("x:1")
	for _, data := range []string{"", "USER anonymous\r\n", "AUTH TLS\r\n", "\x00"} {
		if got := p.Spec().Detect([]byte(data)); got != NoMatch {
			t.Errorf("FTP detector on %q = %v, want NoMatch", data, got)
		}
	}
	if s := p.Spec(); !s.ServerFirst || s.Silence != 0 || !s.Structural {
		t.Fatalf("FTP spec %+v: want server-first with the default silence", s)
	}
}
