package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
)

// Vhostd is the backend under test: the vhostd binary, served on the two
// sockets, pinned with taskset (its pollers are threads of the one
// process, so --pollers N all share the backend core).
type Vhostd struct {
	// Bin is the vhostd executable (make build puts it in bin/).
	Bin string
}

// Name implements Backend.
func (v *Vhostd) Name() string { return "vhostd" }

// Check implements Backend.
func (v *Vhostd) Check() error {
	if _, err := os.Stat(v.Bin); err != nil {
		return fmt.Errorf("vhostd binary: %w (run make build)", err)
	}
	return nil
}

// FrontendServer implements Backend: vhostd serves the sockets.
func (v *Vhostd) FrontendServer() bool { return false }

var vhostdSeq atomic.Int64

// Start implements Backend. In the VM-to-uplink topology vhostd gets a
// DPDK uplink, net_vhost0 serving socket u, instead of socket b (as
// docs/uplink.md and test/e2e's TestUplinkTestpmd run it). EAL runs with
// vhostd's defaults (no hugepages, -l = the first CPU of its taskset, so
// the EAL thread stays on the backend CPU) and a --file-prefix of the
// bench's, so the tracker can check its runtime directory is gone.
func (v *Vhostd) Start(ctx context.Context, env RunEnv) (Instance, error) {
	ctl := filepath.Join(env.Dir, "ctl.sock")
	argv := []string{"taskset", "-c", strconv.Itoa(env.CPU), v.Bin,
		"--control", ctl, "--log-level", "warn", "--socket", "a=" + env.SockA()}
	if env.Uplink() {
		prefix := fmt.Sprintf("vhb-vhostd-%d-%d", os.Getpid(), vhostdSeq.Add(1))
		env.Tracker.AddPrefix(prefix)
		argv = append(argv, "--uplink", "uplink=net_vhost0,iface="+env.SockU(), "--eal", "--file-prefix="+prefix)
	} else {
		argv = append(argv, "--socket", "b="+env.SockB())
	}
	if env.Case.Pollers > 0 {
		argv = append(argv, "--pollers", strconv.Itoa(env.Case.Pollers))
	}
	inst, err := startVhostd(ctx, env.Tracker, env.Log("vhostd"), ctl, argv)
	if err != nil || !env.Uplink() {
		return inst, err
	}
	// net_vhost creates its socket when the device is probed, before the
	// control socket answers; check anyway, the generator's client port
	// fails at once without it.
	if err := waitSocketFile(ctx, env.SockU(), inst.p, 5*time.Second); err != nil {
		inst.Stop()
		return nil, fmt.Errorf("vhostd uplink: %w [vhostd's log: %s]", err, lastErrorLine(env.Log("vhostd")))
	}
	return inst, nil
}

// vhostdInst is a running vhostd.
type vhostdInst struct {
	p   *Proc
	ctl string
}

func startVhostd(ctx context.Context, tr *Tracker, logPath, ctl string, argv []string) (*vhostdInst, error) {
	p, err := StartProc(tr, "vhostd", logPath, nil, argv...)
	if err != nil {
		return nil, err
	}
	v := &vhostdInst{p: p, ctl: ctl}
	// The control socket answers once every vhost-user socket listens.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ports []control.PortInfo
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := control.Call(cctx, ctl, "ports", &ports)
		cancel()
		if err == nil {
			return v, nil
		}
		if p.Exited() {
			v.Stop()
			return nil, fmt.Errorf("vhostd exited at start (%v): see %s", p.ExitErr(), logPath)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			v.Stop()
			return nil, fmt.Errorf("vhostd control socket did not answer: %w", errors.Join(err, ctx.Err()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid implements Instance.
func (v *vhostdInst) Pid() int { return v.p.Pid() }

// Stats returns vhostd's per-port counters (for the log).
func (v *vhostdInst) Stats(ctx context.Context) ([]control.PortStats, error) {
	var st []control.PortStats
	err := control.Call(ctx, v.ctl, "stats", &st)
	return st, err
}

// Drops implements DropCounter: every drop counter of every port
// (tx_no_buffers, tx_uplink_full, ...), summed.
func (v *vhostdInst) Drops(ctx context.Context) (uint64, error) {
	st, err := v.Stats(ctx)
	if err != nil {
		return 0, fmt.Errorf("vhostd stats: %w", err)
	}
	return VhostdDrops(st), nil
}

// VhostdDrops sums the drop counters of all ports.
func VhostdDrops(st []control.PortStats) uint64 {
	var n uint64
	for _, p := range st {
		for _, d := range p.Drops {
			n += d
		}
	}
	return n
}

// CostMark implements CostMeter: the busy cycles and frames of all of
// vhostd's pollers (control command "pollers").
func (v *vhostdInst) CostMark(ctx context.Context) (CostMark, error) {
	var ps []control.PollerStats
	if err := control.Call(ctx, v.ctl, control.CmdPollers, &ps); err != nil {
		return CostMark{}, fmt.Errorf("vhostd pollers: %w", err)
	}
	return PollersMark(ps), nil
}

// PollersMark sums the busy cycles and frames of vhostd's pollers.
func PollersMark(ps []control.PollerStats) CostMark {
	var m CostMark
	for _, p := range ps {
		m.Cycles += p.BusyCycles
		m.Frames += p.Frames
		if m.TSCHz == 0 {
			m.TSCHz = p.TSCHz
		}
	}
	return m
}

// CheckLayout returns an error unless every VM port with a frontend
// negotiated the ring layout the case asks for (ring_packed acked iff
// packed), so a packed row never reports split rings by mistake.
func (v *vhostdInst) CheckLayout(ctx context.Context, packed bool) error {
	var ps []control.PortInfo
	if err := control.Call(ctx, v.ctl, "ports", &ps); err != nil {
		return fmt.Errorf("vhostd ports: %w", err)
	}
	for _, p := range ps {
		if !p.Vhost.Negotiated {
			continue
		}
		if slices.Contains(p.Vhost.Features, "ring_packed") != packed {
			return fmt.Errorf("vhostd port %s negotiated %v: ring_packed acked is not %v", p.Name, p.Vhost.Features, packed)
		}
	}
	return nil
}

// Stop implements Instance: SIGTERM; vhostd removes its sockets itself.
func (v *vhostdInst) Stop() error {
	return v.p.Stop(10 * time.Second)
}
