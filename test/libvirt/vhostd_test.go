package libvirt

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
)

// vhostd is a running vhostd built from this tree.
type vhostd struct {
	control string
	d       *daemon
	started time.Time
}

// startVhostd runs vhostd with its control socket in dir and the given
// arguments, and stops it (SIGTERM, clean exit, no data race) at the end
// of the test.
func startVhostd(t *testing.T, dir string, args ...string) *vhostd {
	t.Helper()
	v := &vhostd{control: filepath.Join(dir, "ctl.sock"), started: time.Now()}
	v.d = startDaemon(t, "vhostd", filepath.Join(t.TempDir(), "vhostd.log"),
		append([]string{vhostdBin, "--control", v.control, "--log-level", "debug"}, args...)...)
	t.Cleanup(func() {
		if !v.d.stop(15 * time.Second) {
			t.Errorf("vhostd did not exit within 15s of SIGTERM")
		} else if v.d.err != nil {
			t.Errorf("vhostd exited with %v after SIGTERM\n%s", v.d.err, tail(v.d.output(), 3000))
		}
		if strings.Contains(v.d.output(), "DATA RACE") {
			t.Errorf("vhostd reported a data race:\n%s", v.d.output())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ports []control.PortInfo
		if err := control.Call(context.Background(), v.control, "ports", &ports); err == nil {
			return v
		}
		if v.d.exited() {
			t.Fatalf("vhostd exited at start: %v\n%s", v.d.err, v.d.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("vhostd's control socket did not come up\n%s", v.d.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// restart stops v (SIGTERM, a clean exit) and starts a new vhostd with
// the same arguments, as an upgrade would; it returns the new one.
func (v *vhostd) restart(t *testing.T) *vhostd {
	t.Helper()
	if !v.d.stop(15*time.Second) || v.d.err != nil {
		t.Fatalf("vhostd did not exit cleanly on SIGTERM: %v\n%s", v.d.err, tail(v.d.output(), 3000))
	}
	args := v.d.cmd.Args[5:] // after vhostd --control PATH --log-level debug
	return startVhostd(t, filepath.Dir(v.control), args...)
}

func (v *vhostd) ports(t *testing.T) map[string]control.PortInfo {
	t.Helper()
	var ps []control.PortInfo
	if err := control.Call(context.Background(), v.control, "ports", &ps); err != nil {
		t.Fatal(err)
	}
	out := map[string]control.PortInfo{}
	for _, p := range ps {
		out[p.Name] = p
	}
	return out
}

func (v *vhostd) stats(t *testing.T) map[string]control.PortStats {
	t.Helper()
	var st []control.PortStats
	if err := control.Call(context.Background(), v.control, "stats", &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]control.PortStats{}
	for _, s := range st {
		out[s.Name] = s
	}
	return out
}

// vhostctl runs vhostctl against v and fails the test on an error.
func (v *vhostd) vhostctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(vhostctlBin, append([]string{"--control", v.control}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("vhostctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// waitPortState waits until port name is in state want.
//
// "connected" is also met by "running": a guest driver may bind the
// device and start its rings before the first poll sees "connected".
func (v *vhostd) waitPortState(t *testing.T, name, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p := v.ports(t)[name]
		if p.State == want || (want == "connected" && p.State == "running") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %s is %q after %v, want %q\nvhostd log:\n%s", name, p.State, timeout, want, tail(v.d.output(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sockDir returns a short directory for unix sockets (sun_path is 108
// bytes), removed at the end of the test.
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "vl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
