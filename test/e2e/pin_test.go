package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/daemon/cpus"
	"github.com/vhostd/vhostd/test/testpmd"
)

// TestPollerCPUs runs vhostd with --poller-cpus and DPDK's virtio_user
// driver on both ports: every frame arrives, the poller's thread may run
// on its CPU only and every other thread of vhostd only elsewhere, and
// `vhostctl pollers` (the control socket) says so.
func TestPollerCPUs(t *testing.T) {
	requirePeer(t, testpmd.DefaultBinary)
	pollerCPU, rest := pollerAndRest(t)
	dir := sockDir(t)
	v := startVhostd(t, dir, "--pollers", "1", "--poller-cpus", strconv.Itoa(pollerCPU),
		"--socket", "a="+filepath.Join(dir, "a.sock"), "--socket", "b="+filepath.Join(dir, "b.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mrg := true
	tp := v.startTestpmd(t, ctx, testpmd.Config{
		Ports: []testpmd.Port{
			{Socket: filepath.Join(dir, "a.sock"), MAC: macA, MrgRxbuf: &mrg},
			{Socket: filepath.Join(dir, "b.sock"), MAC: macB, MrgRxbuf: &mrg},
		},
		PeerMACs: []string{macB, macA},
		TxPkts:   60,
	})
	v.sendExactAB(t, ctx, tp, 5000)

	var ps []control.PollerStats
	if err := control.Call(ctx, v.Control, "pollers", &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].CPU != pollerCPU || ps[0].TID == 0 || ps[0].Frames < 10000 {
		t.Fatalf("pollers %+v: want one on CPU %d that forwarded the 10000 frames", ps, pollerCPU)
	}
	checkThreadCPUs(t, v, ps[0].TID, pollerCPU, rest)
}

// pollerAndRest splits the CPUs the test may use into one for a poller
// (the last) and the rest, failing unless there are two.
func pollerAndRest(t *testing.T) (int, []int) {
	t.Helper()
	allowed, err := cpus.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 2 {
		t.Fatalf("this test needs 2 CPUs, it may use %s", cpus.Format(allowed))
	}
	return allowed[len(allowed)-1], allowed[:len(allowed)-1]
}

// checkThreadCPUs checks that vhostd's thread pollerTID may run on
// pollerCPU alone and every other thread of it on rest.
func checkThreadCPUs(t *testing.T, v *vhostd, pollerTID, pollerCPU int, rest []int) {
	t.Helper()
	pid := v.cmd.Process.Pid
	tids, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*")
	if err != nil || len(tids) < 2 {
		t.Fatalf("threads of vhostd %d: %v %v", pid, tids, err)
	}
	for _, p := range tids {
		tid, _ := strconv.Atoi(filepath.Base(p))
		got, err := cpus.OfThread(pid, tid)
		if err != nil {
			continue // gone meanwhile
		}
		want := rest
		if tid == pollerTID {
			want = []int{pollerCPU}
		}
		if !slices.Equal(got, want) {
			comm, _ := os.ReadFile(p + "/comm")
			t.Errorf("vhostd thread %d (%s) may use CPUs %s, want %s (the poller is thread %d)", tid, strings.TrimSpace(string(comm)), cpus.Format(got), cpus.Format(want), pollerTID)
		}
	}
}

// TestPollerCPUsUplink: with a DPDK uplink, DPDK's threads (its main
// lcore, which vhostd pins to the first CPU left to it, and its interrupt
// thread) stay off the poller's CPU too.
func TestPollerCPUsUplink(t *testing.T) {
	pollerCPU, rest := pollerAndRest(t)
	dir := sockDir(t)
	// net_null: an uplink whose receive side never runs dry, so the
	// poller is busy from the start.
	v := startVhostd(t, dir, "--poller-cpus", strconv.Itoa(pollerCPU), "--uplink", "net_null0",
		"--socket", "a="+filepath.Join(dir, "a.sock"))
	var ps []control.PollerStats
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if err := control.Call(context.Background(), v.Control, "pollers", &ps); err != nil {
			t.Fatal(err)
		}
		if len(ps) == 1 && ps[0].TID != 0 && ps[0].Frames > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pollers %+v", ps)
		}
	}
	if ps[0].CPU != pollerCPU {
		t.Errorf("poller on CPU %d, want %d", ps[0].CPU, pollerCPU)
	}
	checkThreadCPUs(t, v, ps[0].TID, pollerCPU, rest)
	if want := "main_lcore_cpu=" + strconv.Itoa(rest[0]); !strings.Contains(v.Log(), want) {
		t.Errorf("vhostd log does not say %s:\n%s", want, tail(v.Log(), 2000))
	}
}

// TestGOMAXPROCSAbovePollers: as many pollers as vhostd has CPUs, without
// --poller-cpus: vhostd raises GOMAXPROCS to one more (each spinning
// poller holds one), says so in its log, and its control socket answers
// while the pollers spin.
func TestGOMAXPROCSAbovePollers(t *testing.T) {
	allowed, err := cpus.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	n := len(allowed)
	dir := sockDir(t)
	v := startVhostd(t, dir, "--pollers", strconv.Itoa(n), "--uplink", "net_null0",
		"--socket", "a="+filepath.Join(dir, "a.sock"))
	if want := "gomaxprocs=" + strconv.Itoa(n+1); !strings.Contains(v.Log(), want) {
		t.Errorf("vhostd with %d pollers on %d CPUs: log lacks %s:\n%s", n, n, want, tail(v.Log(), 2000))
	}
	var ps []control.PollerStats
	if err := control.Call(context.Background(), v.Control, "pollers", &ps); err != nil || len(ps) != n {
		t.Fatalf("pollers: %+v, %v", ps, err)
	}
}
