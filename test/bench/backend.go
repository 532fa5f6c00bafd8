package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Backend is a vhost-user backend the bench measures: vhostd or a
// reference.
type Backend interface {
	// Name is the label in tables and plots.
	Name() string
	// Check returns why the backend cannot run on this machine (a
	// missing binary or package), or nil.
	Check() error
	// FrontendServer tells whether the generator's VM ports (sockets a
	// and b) must be socket servers (server=1) because the backend
	// connects to them as a client. The uplink socket u is always served
	// by the backend's uplink device (net_vhost), so the generator's
	// uplink port is a client in every case.
	FrontendServer() bool
	// Start brings the backend up on env's sockets (a and b, or a and u
	// for the uplink topology), confined to env.CPU, ready for the
	// generator: sockets the backend serves exist when Start returns; for
	// sockets it connects to, it must keep retrying until the generator's
	// sockets appear. A Start error wrapping ErrUnsupported means the
	// backend cannot run env.Case's topology on this machine at all (not
	// a passing failure): the bench skips that topology for the backend
	// at once and reports why.
	Start(ctx context.Context, env RunEnv) (Instance, error)
}

// Instance is one running backend.
type Instance interface {
	// Pid is the process whose CPU time is the backend's (0 if none).
	Pid() int
	// Stop stops it and removes what it created; it returns an error if
	// it did not stop cleanly.
	Stop() error
}

// RunEnv is what one measurement gives a backend.
type RunEnv struct {
	// Dir is a fresh private directory for sockets and run files.
	Dir string
	// CPU is the CPU the backend is confined to (taskset -c CPU).
	CPU int
	// Case is the traffic case (queues, pollers).
	Case Case
	// LogDir receives the backend's log files; Tag names them.
	LogDir, Tag string
	// Tracker records processes and DPDK prefixes.
	Tracker *Tracker
	// HugeDir, in the hugepage cases, is the hugetlbfs mount DPDK's
	// processes take their memory from ("" without hugepages); Testpmd
	// is then the testpmd binary to run (HugeWrapper).
	HugeDir, Testpmd string
}

// HugeEAL returns the EAL arguments of a testpmd on hugepages (none
// without): --in-memory (no files in the hugetlbfs, so nothing is left
// holding pages, and no clash between processes), the bench's
// --huge-dir, and for a virtio_user frontend --single-file-segments (one
// memory region per segment list: without it the vhost-user memory table
// has more regions than a backend takes, "Too many memory regions").
func (e RunEnv) HugeEAL(frontend bool) []string {
	if e.HugeDir == "" {
		return nil
	}
	a := []string{"--in-memory", "--huge-dir=" + e.HugeDir}
	if frontend {
		a = append(a, "--single-file-segments")
	}
	return a
}

// SockA is the vhost-user socket of generator port 0, VM A.
func (e RunEnv) SockA() string { return filepath.Join(e.Dir, "a.sock") }

// SockB is the socket of VM B (generator port 1 in the VM-to-VM topology).
func (e RunEnv) SockB() string { return filepath.Join(e.Dir, "b.sock") }

// SockU is the socket of the backend's uplink device (generator port 1
// in the VM-to-uplink topology).
func (e RunEnv) SockU() string { return filepath.Join(e.Dir, "u.sock") }

// Sock1 is generator port 1's socket for env.Case's topology.
func (e RunEnv) Sock1() string {
	if e.Case.Topology == VMUplink {
		return e.SockU()
	}
	return e.SockB()
}

// Uplink tells whether env.Case's topology needs the backend's uplink.
func (e RunEnv) Uplink() bool { return e.Case.Topology == VMUplink }

// ErrUnsupported marks a Start error that will not go away on retry: the
// backend cannot run the case's topology here.
var ErrUnsupported = errors.New("not supported by this backend here")

// DropCounter is implemented by instances that can tell how many frames
// they dropped: the bench asks once per repetition, after the loop and the
// idle measurement, right before Stop (so Drops may stop the backend's
// forwarding).
type DropCounter interface {
	Drops(ctx context.Context) (uint64, error)
}

// ReadyWaiter is implemented by instances that may take a while after
// the generator's links are up before they forward (OVS): the bench waits
// for them before seeding the closed loop, since frames seeded too early
// are lost for good.
type ReadyWaiter interface {
	WaitReady(ctx context.Context, timeout time.Duration) error
}

// Log returns the path of a log file for this run.
func (e RunEnv) Log(what string) string {
	return filepath.Join(e.LogDir, e.Tag+"-"+what+".log")
}

// waitSocketFile waits until a unix socket file exists at path, p exits,
// or timeout. Unlike waitListening it does not connect: a vhost-user
// server takes any connection for a frontend.
func waitSocketFile(ctx context.Context, path string, p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("exited (%v) before creating %s", p.ExitErr(), path)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket %s after %v", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
