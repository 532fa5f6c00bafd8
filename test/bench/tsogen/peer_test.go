package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/test/testpmd"
)

// TestThroughDPDKVhost runs the generator against a real peer, DPDK's
// vhost backend (testpmd io forwarding between two net_vhost ports with
// tso=1 and legacy offload flags, the one configuration of it that hands
// the GSO request on): the segments must arrive whole with the GSO
// request, every verified frame must pass, and the pseudo-header sum is
// the one rte_vhost rewrites without the length. The generator runs in
// this process (DPDK allows one EAL per process, so this is the
// package's only test that initialises it in the test's own process).
func TestThroughDPDKVhost(t *testing.T) { throughDPDKVhost(t, dpdk.MaxDataRoom-1) }

// TestThroughDPDKVhostPageBuffers is TestThroughDPDKVhost with receive
// buffers of 4096 bytes (-rx-buf 4096, a Linux guest's page-sized
// mergeable buffers): each segment arrives in 17 of them, chained. It runs
// the test binary again for this test alone, because DPDK allows one EAL
// per process.
func TestThroughDPDKVhostPageBuffers(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		throughDPDKVhost(t, 4096)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestThroughDPDKVhostPageBuffers$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("the test in a process of its own:\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestThroughDPDKVhostPageBuffers") {
		t.Fatalf("the test in a process of its own: %v", err)
	}
}

// childEnv marks the process TestThroughDPDKVhostPageBuffers starts.
const childEnv = "TSOGEN_TEST_CHILD"

func throughDPDKVhost(t *testing.T, rxBuf int) {
	if _, err := exec.LookPath(testpmd.DefaultBinary); err != nil {
		t.Fatalf("%s not found in PATH: apt-get install -y dpdk: %v", testpmd.DefaultBinary, err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("DPDK with --no-huge needs root here")
	}
	dir, err := os.MkdirTemp("/tmp", "tsog")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := testpmd.VhostBackendConfig("1", a, b)
	for i := range cfg.VhostPorts {
		cfg.VhostPorts[i].Extra = "tso=1,legacy-ol-flags=1"
	}
	cfg.ExtraArgs = append(cfg.ExtraArgs, "--mbuf-size=65534")
	cfg.TotalMbufs = 2048
	cfg.LogFile = filepath.Join(t.TempDir(), "backend.log")
	be, err := testpmd.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	res, err := run(a, b, false, fmt.Sprintf("tsogen-test-%d", os.Getpid()), "", "", 512, rxBuf,
		300*time.Millisecond, time.Second, 8, SegFrameLen, 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.2f Gbps; %d whole+GSO, %d whole plain, %d segmented, %d other; verified %d (partial %d, partial-no-len %d, full %d), bad %d %s",
		res.Gbps, res.WholeGSO, res.WholePlain, res.Segmented, res.Other, res.Verified, res.Partial, res.PartialNoLen, res.Full, res.Bad, res.FirstBad)
	if res.Refused != "" || !res.TxTSO || !res.RxLRO {
		t.Fatalf("TSO not negotiated: %q (tx %v, rx %v)", res.Refused, res.TxTSO, res.RxLRO)
	}
	if res.WholeGSO == 0 || res.WholePlain+res.Segmented+res.Other != 0 {
		t.Errorf("delivered %d whole+GSO, %d whole plain, %d segmented, %d other: want whole segments with their GSO request only",
			res.WholeGSO, res.WholePlain, res.Segmented, res.Other)
	}
	if res.Verified == 0 || res.Bad != 0 || res.PartialNoLen != res.Verified {
		t.Errorf("verified %d, bad %d (%s), partial-no-len %d: want every verified frame good, with rte_vhost's pseudo-header sum", res.Verified, res.Bad, res.FirstBad, res.PartialNoLen)
	}
	if res.Gbps <= 0 || res.PayloadBytes != res.RxFrames*uint64(SegFrameLen-HdrLen) {
		t.Errorf("%.2f Gbps, %d payload bytes in %d frames", res.Gbps, res.PayloadBytes, res.RxFrames)
	}
}
