package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
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
	allowed, err := cpus.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 2 {
		t.Fatalf("this test needs 2 CPUs, it may use %s", cpus.Format(allowed))
	}
	pollerCPU := allowed[len(allowed)-1]
	rest := allowed[:len(allowed)-1]
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
		if tid == ps[0].TID {
			want = []int{pollerCPU}
		}
		if !slices.Equal(got, want) {
			t.Errorf("vhostd thread %d may use CPUs %s, want %s (the poller is thread %d)", tid, cpus.Format(got), cpus.Format(want), ps[0].TID)
		}
	}
}
