package vswitch_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/cpus"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/switchtest"
)

// pollerTIDs waits until every poller of s runs and returns their thread
// ids.
func pollerTIDs(t *testing.T, s *vswitch.Switch) []vswitch.PollerLoad {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		loads := s.PollerLoads()
		ok := true
		for _, l := range loads {
			ok = ok && l.TID != 0
		}
		if ok {
			return loads
		}
		if time.Now().After(deadline) {
			t.Fatalf("pollers did not start: %+v", loads)
		}
		time.Sleep(time.Millisecond)
	}
}

// Each poller runs on the CPU Config.CPUs gives it, forwards, reports it,
// and gives its thread back with the mask it had (so no goroutine
// inherits the one-CPU mask).
func TestPollersPinned(t *testing.T) {
	allowed, err := cpus.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 2 {
		t.Fatalf("this test needs 2 CPUs, the process may use %s", cpus.Format(allowed))
	}
	// In reverse: poller 0 on the last CPU.
	want := []int{allowed[1], allowed[0]}
	s, err := vswitch.New(vswitch.Config{Pollers: 2, CPUs: want}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	a, b := switchtest.NewChanPort("a", 64), switchtest.NewChanPort("b", 64)
	for _, p := range []*switchtest.ChanPort{a, b} {
		if _, err := s.AddPort(p); err != nil {
			t.Fatal(err)
		}
	}
	defer a.Close()
	defer b.Close()
	s.Start()
	loads := pollerTIDs(t, s)
	for i, l := range loads {
		got, err := cpus.OfThread(0, l.TID)
		if err != nil {
			t.Fatal(err)
		}
		if l.CPU != want[i] || !slices.Equal(got, []int{want[i]}) {
			t.Errorf("poller %d: reports CPU %d, its thread %d may use %s; want %d", i, l.CPU, l.TID, cpus.Format(got), want[i])
		}
	}
	f := frame(macB, macA, "through pinned pollers")
	a.Inject(f)
	expect(t, b, f)
	g := frame(macA, macB, "and back")
	b.Inject(g)
	expect(t, a, g)
	s.Close()
	for _, l := range s.PollerLoads() {
		if l.TID != 0 {
			t.Errorf("poller %d stopped but reports thread %d", l.Poller, l.TID)
		}
	}
	// The pollers' threads got their masks back: whatever Go runs on
	// them next may use the process's CPUs.
	for _, l := range loads {
		if got, err := cpus.OfThread(0, l.TID); err == nil && !slices.Equal(got, allowed) {
			t.Errorf("poller %d's thread %d after Close may use %s, want %s", l.Poller, l.TID, cpus.Format(got), cpus.Format(allowed))
		}
	}
}

// Without CPUs the pollers report -1 and run where the process may.
func TestPollersUnpinned(t *testing.T) {
	s, _ := newSwitch(t, "a", "b")
	allowed, err := cpus.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range pollerTIDs(t, s) {
		got, err := cpus.OfThread(0, l.TID)
		if err != nil {
			t.Fatal(err)
		}
		if l.CPU != -1 || !slices.Equal(got, allowed) {
			t.Errorf("poller %d: CPU %d, may use %s; want -1 and %s", l.Poller, l.CPU, cpus.Format(got), cpus.Format(allowed))
		}
	}
}

func TestPollerCPUsCount(t *testing.T) {
	_, err := vswitch.New(vswitch.Config{Pollers: 2, CPUs: []int{0}}, testLog())
	if err == nil || !strings.Contains(err.Error(), "CPUs for 2 pollers, one each, but 1 given") {
		t.Errorf("New with 1 CPU for 2 pollers: %v", err)
	}
}
