package vswitch

import (
	"sync"
	"testing"
	"time"
)

// blockingPort is a port whose first Transmit blocks until released: it
// holds its poller in the middle of a burst.
type blockingPort struct {
	entered, release chan struct{}
	once             sync.Once
	counters         Counters
}

func (p *blockingPort) Name() string          { return "blocking" }
func (p *blockingPort) Attach(Control)        {}
func (p *blockingPort) Stats() Snapshot       { return SumCounters(&p.counters) }
func (p *blockingPort) Receive(*Burst) int    { return 0 }
func (p *blockingPort) Done(*Burst)           {}
func (p *blockingPort) WaitFDs(d []int) []int { return d }
func (p *blockingPort) Arm() bool             { return false }
func (p *blockingPort) Counters() *Counters   { return &p.counters }
func (p *blockingPort) Transmit(int, []*Frame) {
	p.once.Do(func() {
		close(p.entered)
		<-p.release
	})
}

// TestPublishWaitsForBurst: a VM port's Publish, which the vhost device
// calls to stop or restart its rings (SET_FEATURES turning dirty logging
// on for a migration, GET_VRING_BASE, a new log or memory table), does
// not return while a poller is in the middle of a burst that may write
// into the old rings: a frame flooded to the port and to a port that
// holds the poller mid-burst keeps Publish waiting until the burst ends.
// Were it to return at once, the device would reply to the frontend
// while the poller could still write guest memory through queues that
// do not log.
func TestPublishWaitsForBurst(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, false)
	b := newVMEnd(t, s, "b", 0x100000000, 12, false)
	b.post(16, 2048)
	c := &blockingPort{entered: make(chan struct{}), release: make(chan struct{})}
	if _, err := s.AddPort(c); err != nil {
		t.Fatal(err)
	}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(c.release) }) }
	t.Cleanup(release) // before the switch closes (cleanups run last first)
	// The frame is queued before the pollers start: the fake driver's
	// writes are plain, and the race detector would see them race with
	// the poller's reads.
	bc := ethFrame(0xff, 0xa, 60)
	copy(bc, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	a.send(bc, 14)
	s.Start()
	select {
	case <-c.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller never transmitted the flooded frame")
	}
	done := make(chan struct{})
	go func() {
		b.port.Publish(nil)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Publish(nil) returned while a poller was in the middle of a burst")
	case <-time.After(200 * time.Millisecond):
	}
	release()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish(nil) did not return once the burst ended")
	}
}
