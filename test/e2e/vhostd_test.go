// Package e2e runs vhostd, built from this tree, against real peers: DPDK's
// own virtio driver (dpdk-testpmd with net_virtio_user ports) and QEMU
// guests. The tests need root, dpdk-testpmd and qemu-system-x86_64; they
// fail, not skip, when a peer is missing (with -short they are skipped).
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/test/binaries"
	"github.com/vhostd/vhostd/test/testpmd"
)

var vhostdBin, vhostctlBin string

func TestMain(m *testing.M) {
	dir, err := binaries.Build("./daemon/cmd/vhostd", "./daemon/cmd/vhostctl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vhostdBin = filepath.Join(dir, "vhostd")
	vhostctlBin = filepath.Join(dir, "vhostctl")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requirePeer fails the test when a real peer is missing.
func requirePeer(t *testing.T, bins ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test with real peers; skipped with -short")
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found: install it (see .ci/run: apt-get install -y dpdk qemu-system-x86 busybox-static cpio): %v", b, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("end-to-end tests need root (DPDK without hugepages, QEMU memfd)")
	}
}

// vhostd is a running daemon under test.
type vhostd struct {
	t       *testing.T
	cmd     *exec.Cmd
	Dir     string
	Control string
	log     *os.File
	done    chan error
	// Started is when the process was started.
	Started time.Time
}

// sockDir returns a short directory for sockets (sun_path is 108 bytes).
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "vd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startVhostd runs vhostd with a control socket in dir and the given
// extra arguments; sockets are given as NAME=... relative to dir.
func startVhostd(t *testing.T, dir string, args ...string) *vhostd {
	t.Helper()
	v := &vhostd{t: t, Dir: dir, Control: filepath.Join(dir, "ctl.sock"), done: make(chan error, 1)}
	logf, err := os.Create(filepath.Join(t.TempDir(), "vhostd.log"))
	if err != nil {
		t.Fatal(err)
	}
	v.log = logf
	v.cmd = exec.Command(vhostdBin, append([]string{"--control", v.Control, "--log-level", "debug"}, args...)...)
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	v.Started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.done <- v.cmd.Wait() }()
	t.Cleanup(v.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ports []control.PortInfo
		if err := control.Call(context.Background(), v.Control, "ports", &ports); err == nil {
			return v
		}
		select {
		case err := <-v.done:
			t.Fatalf("vhostd exited at start: %v\n%s", err, v.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("vhostd control socket did not come up\n%s", v.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kill kills vhostd with SIGKILL, as a crash would, and waits for it to
// be gone; it leaves its sockets behind. Its log is checked for data
// races.
func (v *vhostd) kill(t *testing.T) {
	t.Helper()
	if err := v.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill vhostd: %v", err)
	}
	<-v.done
	if strings.Contains(v.Log(), "DATA RACE") {
		t.Errorf("vhostd reported a data race:\n%s", v.Log())
	}
	v.log.Close()
}

// Log returns vhostd's output so far.
func (v *vhostd) Log() string {
	b, _ := os.ReadFile(v.log.Name())
	return string(b)
}

// stop sends SIGTERM and checks vhostd exits cleanly, removing its sockets
// and reporting no data race.
func (v *vhostd) stop() {
	if v.cmd.ProcessState != nil {
		return
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-v.done:
		if err != nil {
			v.t.Errorf("vhostd exited with %v after SIGTERM\n%s", err, tail(v.Log(), 3000))
		}
	case <-time.After(15 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
		v.t.Errorf("vhostd did not exit within 15s of SIGTERM")
	}
	if strings.Contains(v.Log(), "DATA RACE") {
		v.t.Errorf("vhostd reported a data race:\n%s", v.Log())
	}
	ents, _ := os.ReadDir(v.Dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sock") {
			v.t.Errorf("vhostd left %s behind", e.Name())
		}
	}
	v.log.Close()
}

func (v *vhostd) stats(t *testing.T) map[string]control.PortStats {
	t.Helper()
	var st []control.PortStats
	if err := control.Call(context.Background(), v.Control, "stats", &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]control.PortStats{}
	for _, s := range st {
		out[s.Name] = s
	}
	return out
}

func (v *vhostd) ports(t *testing.T) map[string]control.PortInfo {
	t.Helper()
	var ps []control.PortInfo
	if err := control.Call(context.Background(), v.Control, "ports", &ps); err != nil {
		t.Fatal(err)
	}
	out := map[string]control.PortInfo{}
	for _, p := range ps {
		out[p.Name] = p
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func totalDrops(s control.PortStats) uint64 {
	var n uint64
	for _, d := range s.Drops {
		n += d
	}
	return n
}

// matchTestpmd checks that each vhostd port counted exactly what the
// testpmd port attached to it sent (vhostd rx) and received (vhostd tx),
// packets and bytes, with no drops. names[i] is attached to testpmd port i.
func (v *vhostd) matchTestpmd(t *testing.T, names []string, st []testpmd.PortStats) map[string]control.PortStats {
	t.Helper()
	vs := v.stats(t)
	for i, name := range names {
		s := vs[name]
		if s.RxPackets != st[i].TxPackets || s.TxPackets != st[i].RxPackets || totalDrops(s) != 0 {
			t.Errorf("vhostd port %s: rx %d tx %d drops %v; testpmd port %d sent %d received %d",
				name, s.RxPackets, s.TxPackets, s.Drops, i, st[i].TxPackets, st[i].RxPackets)
		}
		if s.RxBytes != st[i].TxBytes || s.TxBytes != st[i].RxBytes {
			t.Errorf("vhostd port %s bytes rx %d tx %d; testpmd tx %d rx %d", name, s.RxBytes, s.TxBytes, st[i].TxBytes, st[i].RxBytes)
		}
	}
	return vs
}

// startTestpmd starts dpdk-testpmd as the frontend of v's ports and waits
// for its links; a failure shows vhostd's log too. It is closed at the end
// of the test.
func (v *vhostd) startTestpmd(t *testing.T, ctx context.Context, cfg testpmd.Config) *testpmd.TestPMD {
	t.Helper()
	if cfg.LogFile == "" {
		cfg.LogFile = filepath.Join(t.TempDir(), "testpmd.log")
	}
	tp, err := testpmd.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("testpmd: %v\nvhostd log:\n%s", err, tail(v.Log(), 3000))
	}
	t.Cleanup(func() { tp.Close() })
	if err := tp.WaitLinksUp(ctx); err != nil {
		t.Fatal(err)
	}
	return tp
}
