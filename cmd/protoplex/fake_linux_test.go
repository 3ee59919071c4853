package main

import (
	"net"
	"os"

	"github.com/darkit/protoplex/internal/handover"
)

// fakeEnv makes the test binary, started by an upgrade in place of
// protoplex, a new binary that misbehaves as its value says: "version"
// speaks another handover format, "first-release" says hello as the
// first release (handover format 1) does, "die-at-commit" dies once the first
// batch of connections is committed, before it says it adopted it.
const fakeEnv = "PROTOPLEX_TEST_FAKE_NEW"

// fakeNewBinary, when fakeEnv is set and the process was started by an
// upgrade, plays that new binary and exits; it returns (false) only when
// it does not.
func fakeNewBinary() bool {
	if os.Getenv(upgradeFDEnv) == "" {
		return false
	}
	switch os.Getenv(fakeEnv) {
	case "version":
		otherVersion()
	case "first-release":
		firstRelease()
	case "die-at-commit":
		dieAtCommit()
	}
	return false
}

// otherVersion says hello in handover format Version+1 and waits for the
// old process's answer.
func otherVersion() {
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
}

// firstRelease says hello as the first release did (format 1, naming no
// higher version) and waits for the old process's answer.
func firstRelease() {
	c, err := net.FileConn(os.NewFile(3, "handover"))
	if err != nil {
		os.Exit(3)
	}
	b, _ := handover.EncodeVersion(nil, 1, handover.Message{Kind: handover.Hello, Note: "protoplex 6abb019"})
	c.Write(b)
	buf := make([]byte, handover.MaxMessage)
	c.Read(buf) // the refusal, or nothing: the old process stops this one
	os.Exit(4)
}

// dieAtCommit takes the listeners and acknowledges them, says it can
// take the first batch of connections, and exits on its commit.
func dieAtCommit() {
	c, err := handover.FileConn(os.NewFile(3, "handover"), handover.Limits{})
	if err != nil {
		os.Exit(3)
	}
	if c.Send(handover.Message{Kind: handover.Hello, Note: "a protoplex that dies at the commit"}, nil) != nil {
		os.Exit(3)
	}
	n := 0
	for {
		m, files, err := c.Recv()
		if err != nil {
			os.Exit(3)
		}
		n += len(files) // the listeners stay open: this process exits with them
		if m.Kind == handover.Done {
			break
		}
	}
	if c.Send(handover.Message{Kind: handover.Ack, Count: uint32(n)}, nil) != nil {
		os.Exit(3)
	}
	if m, _, err := c.Recv(); err != nil || m.Kind != handover.Conns {
		os.Exit(3)
	}
	if c.Send(handover.Message{Kind: handover.Ack, Count: 1}, nil) != nil {
		os.Exit(3)
	}
	c.Recv() // the commit
	os.Exit(5)
}
