package protocols

import "testing"

// TestSMTP: a client speaking first with EHLO or HELO; silence is what usually selects SMTP.
func TestSMTP(t *testing.T) {
	runDetectCases(t, detectorOf(t, "smtp"), []detectCase{
		{"EHLO", "EHLO client.test\r\n", Match},
		{"helo in lower case", "helo x\r\n", Match},
		{"verb prefix", "EHL", NeedMore},
		{"other verb", "EHLX", NoMatch},
	})
	if !NewSMTPProtocol("x:1").ServerFirst() {
		t.Fatal("SMTP is server-first")
	}
}
