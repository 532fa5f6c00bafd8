package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"syscall"

	"github.com/vhostd/vhostd/test/testpmd"
)

// Tracker remembers everything the bench created outside its output
// directory (processes, temporary directories, DPDK runtime directories)
// so the end of the run can check that nothing is left behind.
type Tracker struct {
	mu       sync.Mutex
	pids     map[int]string
	dirs     map[string]bool
	prefixes map[string]bool
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker {
	return &Tracker{pids: map[int]string{}, dirs: map[string]bool{}, prefixes: map[string]bool{}}
}

// AddPID records a started process.
func (t *Tracker) AddPID(name string, pid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pids[pid] = name
}

// TempDir makes a directory under /tmp with a short name (vhost-user
// socket paths must fit sun_path's 108 bytes) and records it.
func (t *Tracker) TempDir(pattern string) (string, error) {
	d, err := os.MkdirTemp("/tmp", pattern)
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dirs[d] = true
	return d, nil
}

// AddPrefix records a DPDK --file-prefix whose runtime directory must be
// gone at the end.
func (t *Tracker) AddPrefix(p string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.prefixes[p] = true
}

// RemoveAll removes every recorded temporary directory and every DPDK
// runtime directory of a recorded prefix. Call it after all processes are
// stopped.
func (t *Tracker) RemoveAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for d := range t.dirs {
		os.RemoveAll(d)
	}
	for p := range t.prefixes {
		for _, d := range testpmd.RuntimeDirs(p) {
			os.RemoveAll(d)
		}
	}
}

// Leftovers lists what is still there: live recorded processes, existing
// recorded directories. Empty means the run left nothing behind.
func (t *Tracker) Leftovers() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for pid, name := range t.pids {
		// Signal 0 probes existence; ESRCH means gone. A reaped PID
		// could be reused by an unrelated process, so also compare the
		// command name's start.
		if err := syscall.Kill(pid, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
				out = append(out, fmt.Sprintf("process %d (%s, now %q)", pid, name, string(b[:max(len(b)-1, 0)])))
			}
		}
	}
	for d := range t.dirs {
		if _, err := os.Lstat(d); err == nil {
			out = append(out, "directory "+d)
		}
	}
	for p := range t.prefixes {
		for _, d := range testpmd.RuntimeDirs(p) {
			if _, err := os.Lstat(d); err == nil {
				out = append(out, "DPDK runtime directory "+d)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Counts returns how many processes, directories and DPDK prefixes were
// recorded.
func (t *Tracker) Counts() (pids, dirs, prefixes int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pids), len(t.dirs), len(t.prefixes)
}
