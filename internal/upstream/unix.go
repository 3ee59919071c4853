package upstream

import (
	"fmt"
	"strings"
)

// UnixPrefix starts a target that is a Unix stream socket: "unix:/path".
const UnixPrefix = "unix:"

// MaxUnixPath is the longest socket path: sun_path holds 108 bytes on
// Linux, the last one the terminating NUL.
const MaxUnixPath = 107

// CheckUnixPath checks a Unix socket path: absolute (a relative one would
// follow the working directory), at most MaxUnixPath bytes, no NUL.
func CheckUnixPath(path string) error {
	switch {
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("unix socket path %q: want an absolute path", path)
	case len(path) > MaxUnixPath:
		return fmt.Errorf("unix socket path %q: %d bytes, at most %d", path, len(path), MaxUnixPath)
	case strings.ContainsRune(path, 0):
		return fmt.Errorf("unix socket path %q: contains NUL", path)
	}
	return nil
}
