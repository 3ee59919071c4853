//go:build !linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/darkit/protoplex"
)

// Upgrades hand sockets over on Linux only: elsewhere SIGUSR2 does
// nothing and -upgrade fails.

const upgradeWait = 0

type upgradeChild struct{}

func takeUpgrade() (*upgradeChild, error)                            { return nil, nil }
func (*upgradeChild) options() []protoplex.Option                    { return nil }
func (*upgradeChild) listeners() []net.Listener                      { return nil }
func (*upgradeChild) ready(*protoplex.ProtocolManager, *slog.Logger) {}
func (*upgradeChild) abandon(string)                                 {}

func catchUpgrade() chan os.Signal { return nil }

type upgrader struct{}

func upgradeOnSignal(context.Context, chan os.Signal, func(), *protoplex.ProtocolManager, *slog.Logger, []net.Listener) *upgrader {
	return nil
}

func (*upgrader) exiting() {}

func upgradeCommand(pid int, _ time.Duration, _, stderr io.Writer) int {
	fmt.Fprintf(stderr, "protoplex: -upgrade %d: upgrades need Linux\n", pid)
	return exitFail
}
