package hostile

import (
	"os"
	"syscall"
	"testing"
)

// TestSocketPermissions is case 7: --socket-mode and --socket-group set
// every vhost-user socket's mode and group, a per-socket mode= overrides
// the mode, and the control socket keeps its own (0660, vhostd's group).
func TestSocketPermissions(t *testing.T) {
	const nogroup = 65534
	v := startVhostd(t, []port{{Name: "a"}, {Name: "b", Opts: ",mode=0600"}},
		"--socket-mode", "0660", "--socket-group", "nogroup")
	defer v.finish(t, "7", "a", "b")
	check := func(path string, mode os.FileMode, gid uint32) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("stat %s: %v", path, err)
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != mode || st.Gid != gid {
			t.Errorf("%s: mode %v gid %d, want a socket with mode %v gid %d", path, fi.Mode(), st.Gid, mode, gid)
		}
	}
	check(v.Socks["a"], 0o660, nogroup)
	check(v.Socks["b"], 0o600, nogroup)
	check(v.Control, 0o660, uint32(os.Getegid()))
}
