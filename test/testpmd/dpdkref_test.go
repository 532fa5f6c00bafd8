//go:build dpdkref

// End-to-end tests against DPDK's own vhost-user backend (net_vhost, io
// forwarding), not vhostd: go test -tags dpdkref ./test/testpmd/
// They need root and dpdk-testpmd (apt-get install -y dpdk); they fail,
// not skip, without it, unless -short.

package testpmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	macA = "02:00:00:00:00:0a"
	macB = "02:00:00:00:00:0b"
)

func requireTestpmd(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs dpdk-testpmd; skipped with -short")
	}
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Fatalf("%s not found in PATH: install Debian's dpdk package (apt-get install -y dpdk): %v", DefaultBinary, err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("dpdk-testpmd with --no-huge needs root here")
	}
}

// sockDir makes a short directory under /tmp for the vhost-user sockets
// (sun_path is 108 bytes) and checks at the end that nothing is left.
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "tp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			t.Errorf("left behind in %s: %s", dir, e.Name())
		}
		os.RemoveAll(dir)
	})
	return dir
}

// startBackend starts DPDK's backend on CPU 1 with sockets A and B in dir, and
// returns it; t.Cleanup closes it and checks its runtime files are gone.
func startBackend(t *testing.T, ctx context.Context, dir string) *TestPMD {
	t.Helper()
	cfg := VhostBackendConfig("1", filepath.Join(dir, "A.sock"), filepath.Join(dir, "B.sock"))
	cfg.LogFile = filepath.Join(t.TempDir(), "backend.log")
	be, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAndCheck(t, be) })
	return be
}

func frontendConfig(dir string, mrg bool) Config {
	return Config{
		Ports: []Port{
			{Socket: filepath.Join(dir, "A.sock"), MAC: macA, MrgRxbuf: &mrg},
			{Socket: filepath.Join(dir, "B.sock"), MAC: macB, MrgRxbuf: &mrg},
		},
		CPUs:     "0",
		PeerMACs: []string{macB, macA},
		TxPkts:   60,
	}
}

func closeAndCheck(t *testing.T, tp *TestPMD) {
	t.Helper()
	if err := tp.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for _, d := range RuntimeDirs(tp.FilePrefix()) {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("runtime directory %s left behind", d)
		}
	}
	if err := syscall.Kill(tp.Pid(), 0); err == nil {
		t.Errorf("testpmd pid %d still there", tp.Pid())
	}
}

// TestTxFirstSemantics documents what "start tx_first N" does in rxonly
// mode: each port sends exactly N*burst frames, and with io forwarding in
// the backend each one arrives on the other port.
func TestTxFirstSemantics(t *testing.T) {
	requireTestpmd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := sockDir(t)
	be := startBackend(t, ctx, dir)
	cfg := frontendConfig(dir, true)
	cfg.ForwardMode = "rxonly"
	fe, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAndCheck(t, fe)
	if err := fe.WaitLinksUp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := be.WaitLinksUp(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ burst, n int }{{32, 1}, {1, 1}, {7, 3}, {32, 8}, {256, 1}} {
		t0 := time.Now()
		if err := fe.SetBurst(ctx, c.burst); err != nil {
			t.Fatal(err)
		}
		if err := fe.ClearStats(ctx); err != nil {
			t.Fatal(err)
		}
		if err := fe.StartTxFirst(ctx, c.n); err != nil {
			t.Fatal(err)
		}
		want := uint64(c.burst * c.n)
		deadline := time.Now().Add(5 * time.Second)
		var st []PortStats
		for time.Now().Before(deadline) {
			if st, err = fe.Stats(ctx); err != nil {
				t.Fatal(err)
			}
			if st[0].RxPackets >= want && st[1].RxPackets >= want {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // nothing more may come
		fs, err := fe.Stop(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st, err = fe.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		for p := 0; p < 2; p++ {
			if st[p].TxPackets != want || st[p].RxPackets != want || fs[p].TxPackets != want || fs[p].TxDropped != 0 {
				t.Errorf("burst %d x tx_first %d: port %d: stats %+v, forward stats %+v; want %d each way",
					c.burst, c.n, p, st[p], fs[p], want)
			}
			if st[p].TxBytes != want*60 || st[p].RxBytes != want*60 {
				t.Errorf("burst %d x tx_first %d: port %d bytes tx %d rx %d, want %d", c.burst, c.n, p, st[p].TxBytes, st[p].RxBytes, want*60)
			}
		}
		t.Logf("set burst %d, start tx_first %d: %d frames each way (%v)", c.burst, c.n, want, time.Since(t0).Round(time.Millisecond))
	}
}

// TestSendExact exchanges a fixed number of frames each way through DPDK's
// backend, with mergeable RX buffers off and on, and checks that every
// frame arrived, on the frontend and on the backend.
func TestSendExact(t *testing.T) {
	requireTestpmd(t)
	const k = 10000
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	dir := sockDir(t)
	be := startBackend(t, ctx, dir)
	for _, mrg := range []bool{false, true} {
		t.Run(fmt.Sprintf("mrg_rxbuf=%v", mrg), func(t *testing.T) {
			t0 := time.Now()
			fe, err := Start(ctx, frontendConfig(dir, mrg))
			if err != nil {
				t.Fatal(err)
			}
			defer closeAndCheck(t, fe)
			if err := fe.WaitLinksUp(ctx); err != nil {
				t.Fatal(err)
			}
			if err := be.WaitLinksUp(ctx); err != nil {
				t.Fatal(err)
			}
			if err := be.ClearStats(ctx); err != nil {
				t.Fatal(err)
			}
			t1 := time.Now()
			st, err := fe.SendExact(ctx, k, SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t2 := time.Now()
			bst, err := be.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for p, q := range []int{1, 0} {
				if st[p].TxPackets != k || st[q].RxPackets != st[p].TxPackets || st[q].RxBytes != st[p].TxBytes {
					t.Errorf("port %d sent %d frames (%d B), port %d received %d (%d B); want %d",
						p, st[p].TxPackets, st[p].TxBytes, q, st[q].RxPackets, st[q].RxBytes, k)
				}
				if st[q].RxMissed != 0 || st[q].RxErrors != 0 || st[p].TxErrors != 0 {
					t.Errorf("errors: %+v", st)
				}
				// The backend's port p receives what frontend port p sent
				// and hands it to its port q.
				if bst[p].RxPackets != k || bst[q].TxPackets != k {
					t.Errorf("backend port %d RX %d, port %d TX %d; want %d", p, bst[p].RxPackets, q, bst[q].TxPackets, k)
				}
			}
			t.Logf("%d frames each way: start %v, SendExact %v", k, t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond))
		})
	}
}

// TestClosedLoopRate measures, once, LAB.md's closed loop through DPDK's
// backend (frontend on CPU 0, backend on CPU 1). It only logs the rate: the
// machine is shared and absolute numbers drift.
func TestClosedLoopRate(t *testing.T) {
	requireTestpmd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := sockDir(t)
	startBackend(t, ctx, dir)
	fe, err := Start(ctx, frontendConfig(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	defer closeAndCheck(t, fe)
	if err := fe.WaitLinksUp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := fe.StartClosedLoop(ctx, 64); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the loop fill
	r, err := fe.Measure(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.TotalRxPPS <= 0 {
		t.Fatalf("no traffic in the closed loop: %+v", r)
	}
	t.Logf("closed loop, 60 B frames, DPDK backend: %.2f Mpps (port 0 RX %.2f, port 1 RX %.2f) over %v",
		r.TotalRxPPS/1e6, r.RxPPS[0]/1e6, r.RxPPS[1]/1e6, r.Elapsed.Round(time.Millisecond))
	if _, err := fe.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMissingSocket checks the error when the backend's socket is not there.
func TestMissingSocket(t *testing.T) {
	requireTestpmd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := sockDir(t)
	_, err := Start(ctx, frontendConfig(dir, true))
	if err == nil {
		t.Fatal("Start succeeded without a backend")
	}
	for _, s := range []string{"0 of 2 ports came up", "connect error, No such file or directory"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
}

// TestServerMode makes the frontend the socket server and the backend a
// client. testpmd 22.11's virtio_user in server mode blocks in its probe
// until a client connects to each socket in turn, so Start returns only
// then: the backend starts first, and its client ports retry every second
// until the sockets exist.
func TestServerMode(t *testing.T) {
	requireTestpmd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := sockDir(t)
	bcfg := VhostBackendConfig("1", filepath.Join(dir, "A.sock"), filepath.Join(dir, "B.sock"))
	for i := range bcfg.VhostPorts {
		bcfg.VhostPorts[i].Client = true
	}
	be, err := Start(ctx, bcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAndCheck(t, be)
	cfg := frontendConfig(dir, true)
	for i := range cfg.Ports {
		cfg.Ports[i].Server = true
	}
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	t0 := time.Now()
	fe, err := Start(sctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAndCheck(t, fe)
	if err := fe.WaitLinksUp(sctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("server-mode frontend up after %v", time.Since(t0).Round(time.Millisecond))
	st, err := fe.SendExact(ctx, 1000, SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st[0].RxPackets != 1000 || st[1].RxPackets != 1000 {
		t.Errorf("stats %+v", st)
	}
	// The frontend's Close removes its server sockets.
	if err := fe.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "A.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("A.sock after Close: %v", err)
	}
}
