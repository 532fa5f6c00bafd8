package vswitch

import (
	"sync/atomic"

	"github.com/vhostd/vhostd/switch/tsc"
)

// pollerLoad is how one poller spent its time since it started: TSC
// cycles in passes of its loop that moved frames (busy) and in the rest
// (idle: empty polls, the idle spin, sleep), and what the busy passes
// moved. Only the poller writes it, once per pass, with plain stores.
type pollerLoad struct {
	busy, idle     Counter // TSC cycles
	frames, bursts Counter
	// asleep is when the poller went to sleep in epoll, 0 when awake: a
	// reader adds the sleep so far, which idle counts only once it ends
	// (after up to a second, or longer for a port polled at intervals).
	asleep atomic.Uint64
	// reportedIdle is the idle time last reported, which a report never
	// goes below (see PollerLoads). Guarded by the switch's mu.
	reportedIdle uint64
}

// sleep marks the start of a sleep, after accounting the pass that ends
// with it (which moved nothing).
func (l *pollerLoad) sleep(since uint64) uint64 {
	now := l.account(since, 0)
	l.asleep.Store(now)
	return now
}

// wake accounts the sleep that started at since and returns now.
func (l *pollerLoad) wake(since uint64) uint64 {
	l.asleep.Store(0) // before the idle time grows: see idleNow
	return l.account(since, 0)
}

// idleNow returns the idle cycles so far, the sleep in progress included.
// Read in this order (idle, then asleep) against the poller's in wake
// (asleep cleared, then idle grown), a report can miss a sleep that just
// ended, never count one twice; PollerLoads keeps what it reports from
// going back.
func (l *pollerLoad) idleNow() uint64 {
	idle := l.idle.Load()
	if at := l.asleep.Load(); at != 0 {
		if now := tsc.Now(); now > at {
			idle += now - at
		}
	}
	return idle
}

// account adds the pass that ends now, which moved work frames, and
// returns now, the start of the next pass.
func (l *pollerLoad) account(since uint64, work int) uint64 {
	now := tsc.Now()
	if work > 0 {
		l.busy.addOwned(now - since)
		l.frames.addOwned(uint64(work))
		l.bursts.addOwned(1)
	} else {
		l.idle.addOwned(now - since)
	}
	return now
}

// PollerLoad is one poller's load since it started.
type PollerLoad struct {
	Poller int
	// Ports are the names of the ports with a receiver on the poller.
	Ports []string
	// BusyCycles and IdleCycles are TSC cycles spent in passes of the
	// poller's loop that moved frames, and in all the others (empty
	// polls, the idle spin, sleep): together, the poller's life. Convert
	// them with tsc.Hz.
	BusyCycles, IdleCycles uint64
	// Frames is how many frames the poller took from its receivers, in
	// Bursts busy passes: BusyCycles/Frames is its cost per frame.
	Frames, Bursts uint64
	// CPU is the CPU the poller is pinned to (Config.CPUs), -1 if none.
	CPU int
	// TID is the id of the poller's thread while it runs, 0 otherwise:
	// where /proc/self/task/TID tells what the kernel did with it.
	TID int
}

// PollerLoads reports every poller's load, in poller order.
func (s *Switch) PollerLoads() []PollerLoad {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.table.Load()
	out := make([]PollerLoad, len(s.pollers))
	for i, p := range s.pollers {
		out[i] = PollerLoad{
			Poller:     p.id,
			BusyCycles: p.load.busy.Load(),
			IdleCycles: max(p.load.idleNow(), p.load.reportedIdle),
			Frames:     p.load.frames.Load(),
			Bursts:     p.load.bursts.Load(),
			CPU:        p.cpu,
			TID:        int(p.tid.Load()),
		}
		// A counter that went back would read as a restart to Prometheus.
		p.load.reportedIdle = out[i].IdleCycles
		seen := map[int]bool{}
		for _, u := range *p.owned.Load() {
			if u.idx < t.n && t.ports[u.idx] != nil && !seen[u.idx] {
				seen[u.idx] = true
				out[i].Ports = append(out[i].Ports, t.ports[u.idx].Name())
			}
		}
	}
	return out
}

// Asleep reports whether every poller is parked: asleep in epoll until a
// driver kicks or its timeout passes, or not running. A buffer a driver
// makes available without a kick meanwhile stays where it is until then.
func (s *Switch) Asleep() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pollers {
		if !p.parked.Load() {
			return false
		}
	}
	return true
}
