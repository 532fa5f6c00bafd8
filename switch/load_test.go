package vswitch_test

import (
	"testing"
	"time"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/switchtest"
	"github.com/vhostd/vhostd/switch/tsc"
)

// A poller's load adds up: the frames it took are the frames injected,
// every one in a busy pass, and busy plus idle time is (about) the time
// it has run.
func TestPollerLoad(t *testing.T) {
	start := time.Now()
	s, p := newSwitch(t, "a", "b")
	const n = 50
	for i := 0; i < n; i++ {
		f := frame(macB, macA, "load")
		p[0].Inject(f)
		expect(t, p[1], f)
	}
	time.Sleep(100 * time.Millisecond) // some idle time, asleep
	loads := s.PollerLoads()
	ran := time.Since(start).Seconds()
	if len(loads) == 0 {
		t.Fatal("no pollers reported")
	}
	var frames, bursts, busy, idle uint64
	ports := map[string]bool{}
	for _, l := range loads {
		frames += l.Frames
		bursts += l.Bursts
		busy += l.BusyCycles
		idle += l.IdleCycles
		for _, name := range l.Ports {
			ports[name] = true
		}
		// Each poller has run for at most as long as the test.
		if life := tsc.Seconds(l.BusyCycles + l.IdleCycles); life > ran*1.05 {
			t.Errorf("poller %d: busy+idle = %.3fs, but only %.3fs passed", l.Poller, life, ran)
		}
	}
	if frames != n {
		t.Errorf("pollers took %d frames, %d were injected", frames, n)
	}
	if bursts == 0 || bursts > n || busy == 0 {
		t.Errorf("%d bursts, %d busy cycles for %d frames", bursts, busy, n)
	}
	if idle == 0 || tsc.Seconds(idle) < 0.05 {
		t.Errorf("idle time %.3fs, after 100ms with nothing to do", tsc.Seconds(idle))
	}
	if !ports["a"] || !ports["b"] {
		t.Errorf("ports on pollers: %v, want a and b", ports)
	}
}

// Reports never go back, while traffic comes and goes and the pollers
// sleep and wake (a counter that went back would look like a restart).
func TestPollerLoadMonotonic(t *testing.T) {
	s, p := newSwitch(t, "a", "b")
	prev := s.PollerLoads()
	for i := 0; i < 200; i++ {
		if i%20 == 0 {
			f := frame(macB, macA, "tick")
			p[0].Inject(f)
			expect(t, p[1], f)
		}
		time.Sleep(time.Millisecond)
		cur := s.PollerLoads()
		for j := range cur {
			a, b := prev[j], cur[j]
			if b.BusyCycles < a.BusyCycles || b.IdleCycles < a.IdleCycles || b.Frames < a.Frames || b.Bursts < a.Bursts {
				t.Fatalf("poller %d went back: %+v then %+v", b.Poller, a, b)
			}
		}
		prev = cur
	}
}

// Asleep is false while a poller spins after starting, and true once it
// sleeps in epoll with nothing to do.
func TestAsleep(t *testing.T) {
	s, err := vswitch.New(vswitch.Config{IdleSpin: 2 * time.Second}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPort(switchtest.NewChanPort("a", 4)); err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	waitFor := func(want bool, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); s.Asleep() != want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("Asleep() stayed %v for %v", !want, within)
			}
		}
	}
	waitFor(false, 1500*time.Millisecond) // spinning for 2 s after the start
	waitFor(true, 10*time.Second)
}
