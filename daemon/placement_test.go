package daemon

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/cpus"
)

// With poller_cpus, the poller runs on its CPU alone, every other thread
// of the process on the rest, GOMAXPROCS stays at a P per poller plus the
// rest (the runtime would otherwise shrink it to the rest), the control
// socket reports the CPU; Stop gives the threads their CPUs back.
func TestPollerCPUs(t *testing.T) {
	allowed, err := cpus.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 2 {
		t.Fatalf("this test needs 2 CPUs, the process may use %s", cpus.Format(allowed))
	}
	procs := runtime.GOMAXPROCS(0)
	pollerCPU := allowed[len(allowed)-1]
	rest := allowed[:len(allowed)-1]
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.PollerCPUs = cpus.Format([]int{pollerCPU})
	cfg.Ports = []config.Port{{Name: "vm1", Socket: filepath.Join(dir, "vm1.sock")}}
	d, err := Start(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			d.Stop()
		}
	}()
	// The poller reports its thread once it runs: by wall time, not by
	// a count of yields, which strace (make fdcheck) outlasts.
	var ps []int
	for deadline := time.Now().Add(10 * time.Second); len(ps) == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for _, p := range d.Pollers() {
			if p.TID != 0 {
				ps = append(ps, p.TID)
			}
		}
	}
	if len(ps) != 1 {
		t.Fatalf("pollers %+v", d.Pollers())
	}
	if p := d.Pollers()[0]; p.CPU != pollerCPU {
		t.Errorf("poller reports CPU %d, want %d", p.CPU, pollerCPU)
	}
	tids, err := cpus.Threads()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range tids {
		got, err := cpus.OfThread(0, tid)
		if err != nil {
			continue
		}
		want := rest
		if tid == ps[0] {
			want = []int{pollerCPU}
		}
		if !slices.Equal(got, want) {
			t.Errorf("thread %d may use CPUs %s, want %s (poller thread %d)", tid, cpus.Format(got), cpus.Format(want), ps[0])
		}
	}
	if got, want := runtime.GOMAXPROCS(0), 1+len(rest); got != want {
		t.Errorf("GOMAXPROCS %d with poller_cpus, want %d", got, want)
	}
	d.Stop()
	stopped = true
	for _, tid := range tids {
		if got, err := cpus.OfThread(0, tid); err == nil && !slices.Equal(got, allowed) {
			t.Errorf("after Stop, thread %d may use CPUs %s, want %s", tid, cpus.Format(got), cpus.Format(allowed))
		}
	}
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS %d after Stop, want %d as before", got, procs)
	}
}

func TestPollerCPUsRefused(t *testing.T) {
	allowed, err := cpus.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.Ports = []config.Port{{Name: "vm1", Socket: filepath.Join(dir, "vm1.sock")}}
	for _, c := range []struct {
		cpus    string
		pollers int
		want    string
	}{
		{cpus.Format([]int{cpus.MaxCPU}), 1, "is not one vhostd may run on (allowed: " + cpus.Format(allowed) + ";"},
		{"0,1", 1, "names 2 CPUs for 1 poller: name one CPU per poller, or set pollers = 2"},
		{"0,0", 2, "CPU 0 is named twice"},
		{"x", 1, `"x" is not a CPU number`},
	} {
		cfg.PollerCPUs, cfg.Pollers = c.cpus, c.pollers
		d, err := Start(cfg, quietLog())
		if err == nil {
			d.Stop()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "poller_cpus") {
			t.Errorf("poller_cpus %q, pollers %d: %v; want an error saying %q", c.cpus, c.pollers, err, c.want)
		}
	}
	// A refused start left every thread's mask alone.
	tids, err := cpus.Threads()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range tids {
		if got, err := cpus.OfThread(0, tid); err == nil && !slices.Equal(got, allowed) {
			t.Errorf("thread %d may use CPUs %s, want %s", tid, cpus.Format(got), cpus.Format(allowed))
		}
	}
}

// Without poller_cpus, GOMAXPROCS is raised to one more than the pollers
// when the CPUs vhostd may use give no more (a spinning poller holds its
// P), left alone otherwise, and given back at Stop.
func TestGOMAXPROCSAbovePollers(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Fatal("GOMAXPROCS is set in the environment, which vhostd leaves alone: unset it to run this test")
	}
	procs := runtime.GOMAXPROCS(0)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.Ports = []config.Port{{Name: "vm1", Socket: filepath.Join(dir, "vm1.sock")}}
	for _, pollers := range []int{procs - 1, procs, procs + 1} {
		if pollers < 1 {
			continue
		}
		cfg.Pollers = pollers
		d, err := Start(cfg, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		got := runtime.GOMAXPROCS(0)
		d.Stop()
		if want := max(procs, pollers+1); got != want {
			t.Errorf("%d pollers, %d CPUs' worth of Ps at start: GOMAXPROCS %d, want %d", pollers, procs, got, want)
		}
		if after := runtime.GOMAXPROCS(0); after != procs {
			t.Errorf("%d pollers: GOMAXPROCS %d after Stop, want %d", pollers, after, procs)
		}
	}
}
