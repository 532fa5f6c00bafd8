package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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

// Start implements Backend.
func (v *Vhostd) Start(ctx context.Context, env RunEnv) (Instance, error) {
	ctl := filepath.Join(env.Dir, "ctl.sock")
	argv := []string{"taskset", "-c", strconv.Itoa(env.CPU), v.Bin,
		"--control", ctl, "--log-level", "warn",
		"--socket", "a=" + env.SockA(), "--socket", "b=" + env.SockB()}
	if env.Case.Pollers > 0 {
		argv = append(argv, "--pollers", strconv.Itoa(env.Case.Pollers))
	}
	return startVhostd(ctx, env.Tracker, env.Log("vhostd"), ctl, argv)
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

// Stop implements Instance: SIGTERM; vhostd removes its sockets itself.
func (v *vhostdInst) Stop() error {
	return v.p.Stop(10 * time.Second)
}
