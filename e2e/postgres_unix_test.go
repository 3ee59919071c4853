//go:build unix

package e2e

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// startPostgres initialises a throwaway cluster (user "app", trust auth) and
// runs postgres on it; as root it runs as the postgres system user, since
// PostgreSQL refuses to run as root.
func startPostgres(t *testing.T) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	if len(bins) == 0 {
		requireBinary(t, "/usr/lib/postgresql/15/bin/postgres")
	}
	bin := bins[len(bins)-1]
	dir, err := os.MkdirTemp("", "protoplex-pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		os.Chown(dir, uid, gid)
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "app", "--auth=trust", "-N")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port, addr := loopbackPort(t)
	server := exec.Command(filepath.Join(bin, "postgres"), "-D", filepath.Join(dir, "data"), "-k", dir,
		"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-c", "fsync=off")
	server.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	startProcess(t, port, server)
	return addr
}
