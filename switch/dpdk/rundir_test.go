package dpdk

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestRemoveStaleRuntimeDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runtime directories are under /var/run/dpdk as root only")
	}
	prefix := "vhostd-stale-test-" + strconv.Itoa(os.Getpid()) + "-"
	parent := "/var/run/dpdk"
	// A pid that cannot run (above pid_max) and our own, which runs.
	dead := filepath.Join(parent, prefix+"999999999")
	alive := filepath.Join(parent, prefix+strconv.Itoa(os.Getpid()))
	other := filepath.Join(parent, prefix+"x1")
	for _, d := range []string{dead, alive, other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(d)
	}
	os.WriteFile(filepath.Join(dead, "mp_socket"), nil, 0o600)
	removed, err := RemoveStaleRuntimeDirs(prefix)
	if err != nil || len(removed) != 1 || removed[0] != dead {
		t.Fatalf("removed %v, %v; want only %s", removed, err, dead)
	}
	for _, d := range []string{alive, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed", d)
		}
	}
}
