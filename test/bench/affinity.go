package main

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// PinProcess confines every thread of this process to cpu, so the bench's
// own work (stats polling, the latency probe's spinning) never runs on the
// backend's core. Threads created later inherit the mask from the thread
// that creates them, which is pinned too.
func PinProcess(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("pin thread %d to CPU %d: %w", tid, cpu, err)
		}
	}
	return nil
}
