package daemon

import (
	"fmt"
	"os"
	"runtime"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/cpus"
)

// placement is what Start changed about where vhostd's threads run, for
// Stop to give back: GOMAXPROCS, and with poller_cpus each poller's CPU of
// its own.
type placement struct {
	pollers []int // poller i's CPU; nil without poller_cpus
	allowed []int // the process's CPUs before
	rest    []int // every other thread's CPUs now; empty: unchanged, or the pollers share theirs
	procs   bool  // GOMAXPROCS was set here
	log     *logrus.Entry
}

// place arranges vhostd's threads for cfg's pollers. Each poller holds a
// P (a slot to run Go code) for as long as it spins, so GOMAXPROCS must
// leave at least one more for the control socket, the metrics and the
// vhost-user connections: with one P per CPU and as many pollers as CPUs
// (taskset -c 1 with one poller), all of those wait for the runtime to
// preempt a poller, every 10 ms (a control call under load: 15 ms median
// against 0.34 ms with one P more). With poller_cpus (spec, already
// validated as a list) it also checks the CPUs against those the process
// may use and moves every thread of the process off them; the switch pins
// each poller to its CPU when it starts.
func place(spec string, pollers int, log *logrus.Entry) (*placement, error) {
	p := &placement{log: log}
	var err error
	if spec != "" {
		if p.pollers, err = cpus.Parse(spec); err != nil {
			return nil, fmt.Errorf("poller_cpus %q: %w", spec, err)
		}
		if p.allowed, err = cpus.Allowed(); err != nil {
			return nil, fmt.Errorf("poller_cpus: %w", err)
		}
		if err := cpus.Check(p.pollers, p.allowed); err != nil {
			return nil, fmt.Errorf("poller_cpus %q: %w", spec, err)
		}
		if p.rest, err = cpus.KeepOff(p.allowed, p.pollers); err != nil {
			return nil, fmt.Errorf("poller_cpus: %w", err)
		}
	}
	// An explicit GOMAXPROCS in the environment is the user's, and the
	// runtime keeps it.
	if os.Getenv("GOMAXPROCS") == "" {
		switch {
		case p.pollers != nil:
			// Fixed: Go re-reads the affinity every second and would
			// shrink it to the CPUs left.
			runtime.GOMAXPROCS(len(p.pollers) + max(len(p.rest), 1))
			p.procs = true
		case runtime.GOMAXPROCS(0) < pollers+1:
			runtime.GOMAXPROCS(pollers + 1)
			p.procs = true
		}
	}
	f := logrus.Fields{"pollers": pollers, "gomaxprocs": runtime.GOMAXPROCS(0)}
	switch {
	case p.pollers == nil:
		if p.procs {
			log.WithFields(f).Info("GOMAXPROCS raised to one more than the pollers: each holds one while it spins")
		}
	case len(p.rest) == 0:
		f["poller_cpus"] = cpus.Format(p.pollers)
		log.WithFields(f).Warn("every CPU vhostd may use has a poller: vhostd's other threads share the pollers' CPUs (start vhostd with taskset or a cpuset that adds a CPU for them)")
	default:
		f["poller_cpus"], f["other_threads_cpus"] = cpus.Format(p.pollers), cpus.Format(p.rest)
		log.WithFields(f).Info("pollers get CPUs of their own")
	}
	return p, nil
}

// undo gives the process's threads back the CPUs they had and Go its
// default GOMAXPROCS, once the pollers have stopped (each gave its own
// thread back the mask it had before it was pinned).
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
