package listen

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"
)

// UnixPrefix starts a listen address that is a Unix stream socket:
// "unix:/run/protoplex.sock".
const UnixPrefix = "unix:"

// UnixMode is the permission of a listening socket file: owner and group
// may connect (connect(2) needs write permission), others may not.
const UnixMode fs.FileMode = 0o660

// Open listens on addr: "unix:/path" (see Unix) or a TCP "host:port".
func Open(ctx context.Context, addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
		return Unix(ctx, path)
	}
	return TCP(ctx, addr)
}

// Unix listens on the socket file path with UnixMode; closing the listener
// removes the file. A file left at path by a process that ended without
// removing it is replaced, but only when it is a socket nobody accepts
// on: a live listener's socket, or a file that is not a socket, makes the
// bind fail.
func Unix(ctx context.Context, path string) (net.Listener, error) {
	if err := removeStale(ctx, path); err != nil {
		return nil, fmt.Errorf("protoplex: listen unix:%s: %w", path, err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("protoplex: listen unix:%s: %w", path, err)
	}
	if err := os.Chmod(path, UnixMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("protoplex: listen unix:%s: %w", path, err)
	}
	return ln, nil
}

// removeStale removes path when it is a socket that refuses connections.
func removeStale(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another process listens on it", path)
	}
	if !refused(err) {
		return fmt.Errorf("%s: cannot tell whether it is in use: %w", path, err)
	}
	return os.Remove(path)
}
