package daemon

import (
	"fmt"
	"os"
	"runtime"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/cpus"
)

// placement is what Start changed so that each poller has a CPU of its
// own (poller_cpus), for Stop to give back.
type placement struct {
	pollers []int // poller i's CPU
	allowed []int // the process's CPUs before
	rest    []int // every other thread's CPUs now; empty: the pollers share theirs
	procs   bool  // GOMAXPROCS was set here
	log     *logrus.Entry
}

// place checks the CPU list spec (already validated as a list) against
// the CPUs the process may use and moves every thread of the process off
// them; the switch pins each poller to its CPU when it starts.
func place(spec string, log *logrus.Entry) (*placement, error) {
	list, err := cpus.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("poller_cpus %q: %w", spec, err)
	}
	allowed, err := cpus.Allowed()
	if err != nil {
		return nil, fmt.Errorf("poller_cpus: %w", err)
	}
	if err := cpus.Check(list, allowed); err != nil {
		return nil, fmt.Errorf("poller_cpus %q: %w", spec, err)
	}
	p := &placement{pollers: list, allowed: allowed, log: log}
	if p.rest, err = cpus.KeepOff(allowed, list); err != nil {
		return nil, fmt.Errorf("poller_cpus: %w", err)
	}
	// Go sizes GOMAXPROCS by the CPUs its threads may use and re-reads
	// that every second: it would drop to the CPUs left over, and each
	// poller holds a P for as long as it spins, leaving the control
	// socket and the vhost-user connections one P fewer, or none. So one
	// P per poller plus the CPUs left (at least one), fixed; unless
	// GOMAXPROCS was set in the environment, which the runtime keeps.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(len(list) + max(len(p.rest), 1))
		p.procs = true
	}
	f := logrus.Fields{"poller_cpus": cpus.Format(list), "gomaxprocs": runtime.GOMAXPROCS(0)}
	if len(p.rest) == 0 {
		log.WithFields(f).Warn("every CPU vhostd may use has a poller: vhostd's other threads share the pollers' CPUs (start vhostd with taskset or a cpuset that adds a CPU for them)")
	} else {
		f["other_threads_cpus"] = cpus.Format(p.rest)
		log.WithFields(f).Info("pollers get CPUs of their own")
	}
	return p, nil
}

// undo gives the process's threads back the CPUs they had, once the
// pollers have stopped (their threads ended with them).
func (p *placement) undo() {
	if p == nil {
		return
	}
	if len(p.rest) > 0 {
		if err := cpus.SetAll(p.allowed); err != nil {
			p.log.WithError(err).Warn("giving vhostd's threads back their CPUs")
		}
	}
	if p.procs {
		runtime.SetDefaultGOMAXPROCS()
	}
}
