package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"

	"github.com/vhostd/vhostd/test/testpmd"
)

// DPDKRef is DPDK's own vhost-user backend (rte_vhost through net_vhost
// ports) in testpmd's io forwarding: port 0 <-> port 1 with no lookup. It
// is the reference of the ratio column. In the VM-to-uplink topology its
// second port serves socket u instead of b: for DPDK a net_vhost "uplink"
// is a net_vhost port like any other, so that path is the VM-to-VM path
// with another socket name.
//
// In the TSO section (env.Case.TSO) its ports offer TSO (net_vhost
// tso=1: without it net_vhost withholds HOST_TSO4/6), its mbufs hold a
// whole 64 KiB segment, and, with LegacyOL,
// run rte_vhost with its legacy offload flags (legacy-ol-flags=1), the
// only mode in which io forwarding hands the GSO request of a dequeued
// segment on to the enqueue side (see docs/bench.md).
type DPDKRef struct {
	LegacyOL bool
}

// Name implements Backend.
func (d DPDKRef) Name() string {
	if d.LegacyOL {
		return RefDPDKLegacy
	}
	return RefDPDK
}

// TSOVariants implements TSOBackend: net_vhost's default (compliant)
// offload flags, and its legacy ones.
func (DPDKRef) TSOVariants() []Backend { return []Backend{DPDKRef{}, DPDKRef{LegacyOL: true}} }

// Check implements Backend.
func (d DPDKRef) Check() error {
	if _, err := exec.LookPath(testpmd.DefaultBinary); err != nil {
		return fmt.Errorf("%s not found (apt-get install -y dpdk): %w", testpmd.DefaultBinary, err)
	}
	return nil
}

// FrontendServer implements Backend: net_vhost serves the sockets.
func (DPDKRef) FrontendServer() bool { return false }

// Start implements Backend.
func (d DPDKRef) Start(ctx context.Context, env RunEnv) (Instance, error) {
	cfg := testpmd.VhostBackendConfig(strconv.Itoa(env.CPU), env.SockA(), env.Sock1())
	if env.Case.TSO {
		// Mbufs as large as a segment (the data room is a uint16): with
		// testpmd's default 2176-byte mbufs rte_vhost dequeues a 64 KiB
		// segment into a chain of 31, and io forwarding measured 7-11
		// Gbps here instead of about 80 (docs/bench.md). An even size:
		// with 65535 the first mbuf holds an odd number of bytes, and
		// rte_raw_cksum_mbuf (the software checksum net_vhost does in
		// compliant mode) drops the carries of a segment that starts at
		// an odd offset: wrong checksums.
		cfg.ExtraArgs = append(cfg.ExtraArgs, fmt.Sprintf("--mbuf-size=%d", tsoMbufSize))
		cfg.TotalMbufs = 2048
		for i := range cfg.VhostPorts {
			cfg.VhostPorts[i].Extra = "tso=1"
			if d.LegacyOL {
				cfg.VhostPorts[i].Extra += ",legacy-ol-flags=1"
			}
		}
	}
	if q := env.Case.Queues; q > 1 {
		for i := range cfg.VhostPorts {
			cfg.VhostPorts[i].Queues = q
		}
	}
	cfg.LogFile = env.Log("dpdk-io")
	// Cycles per frame of the forwarding core (CostMeter).
	cfg.ExtraArgs = append(cfg.ExtraArgs, "--record-core-cycles")
	if env.HugeDir != "" {
		cfg.Binary, cfg.MemoryMB = env.Testpmd, hugeDPDKMB
		cfg.ExtraEALArgs = append(cfg.ExtraEALArgs, env.HugeEAL(false)...)
	}
	tp, err := testpmd.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("dpdk-io backend: %w", err)
	}
	env.Tracker.AddPID("dpdk-testpmd (backend)", tp.Pid())
	env.Tracker.AddPrefix(tp.FilePrefix())
	return &dpdkInst{tp: tp}, nil
}

type dpdkInst struct{ tp *testpmd.TestPMD }

func (d *dpdkInst) Pid() int { return d.tp.Pid() }

// Drops implements DropCounter: it stops forwarding and returns what
// testpmd's forward statistics count as dropped since the start (frames
// io forwarding took from one port and the other's ring did not take).
func (d *dpdkInst) Drops(ctx context.Context) (uint64, error) {
	fs, err := d.tp.Stop(ctx)
	if err != nil {
		return 0, fmt.Errorf("dpdk-io: stop: %w", err)
	}
	if fs == nil {
		return 0, fmt.Errorf("dpdk-io: forwarding was not running")
	}
	return FwdDrops(fs), nil
}

// CostMark implements CostMeter: the forwarding lcore's cycles and
// frames from --record-core-cycles, read with "show fwd stats all".
func (d *dpdkInst) CostMark(ctx context.Context) (CostMark, error) {
	out, err := d.tp.Cmd(ctx, "show fwd stats all")
	if err != nil {
		return CostMark{}, fmt.Errorf("dpdk-io: show fwd stats all: %w", err)
	}
	m, ok := ParseCoreCycles(out)
	if !ok {
		return CostMark{}, fmt.Errorf("dpdk-io: no CPU cycles/packet in show fwd stats all: %q", clip(out, 300))
	}
	return m, nil
}

// Stop quits testpmd; the testpmd package removes its sockets and runtime
// directory.
func (d *dpdkInst) Stop() error { return d.tp.Close() }
