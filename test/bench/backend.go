package main

import (
	"context"
	"path/filepath"
)

// Backend is a vhost-user backend the bench measures: vhostd or a
// reference.
type Backend interface {
	// Name is the label in tables and plots.
	Name() string
	// Check returns why the backend cannot run on this machine (a
	// missing binary or package), or nil.
	Check() error
	// FrontendServer tells whether the generator's vdevs must be socket
	// servers (server=1) because the backend connects as a client.
	FrontendServer() bool
	// Start brings the backend up on env's two sockets, confined to
	// env.CPU, ready for the generator: for a server backend the sockets
	// exist when Start returns; a client backend must keep retrying until
	// the generator's sockets appear.
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
}

// SockA and SockB are the vhost-user sockets of generator ports 0 and 1.
func (e RunEnv) SockA() string { return filepath.Join(e.Dir, "a.sock") }

// SockB: see SockA.
func (e RunEnv) SockB() string { return filepath.Join(e.Dir, "b.sock") }

// Log returns the path of a log file for this run.
func (e RunEnv) Log(what string) string {
	return filepath.Join(e.LogDir, e.Tag+"-"+what+".log")
}
