package main

import (
	"net"
	"os"

	"github.com/darkit/protoplex/internal/handover"
)

// fakeEnv makes the test binary, started by an upgrade in place of
// protoplex, a new binary that speaks another handover format.
const fakeEnv = "PROTOPLEX_TEST_FAKE_NEW"

// fakeNewBinary, when fakeEnv is set and the process was started by an
// upgrade, says hello in handover format Version+1 and waits for the old
// process's answer; it reports whether it ran.
func fakeNewBinary() bool {
	if os.Getenv(fakeEnv) != "version" || os.Getenv(upgradeFDEnv) == "" {
		return false
	}
	c, err := net.FileConn(os.NewFile(3, "handover"))
	if err != nil {
		os.Exit(3)
	}
	b, _ := handover.Encode(nil, handover.Message{Kind: handover.Hello, Note: "a protoplex from the future"})
	b[5] = handover.Version + 1
	c.Write(b)
	buf := make([]byte, 4096)
	c.Read(buf) // the refusal, or nothing: the old process stops this one
	os.Exit(4)
	return true
}
