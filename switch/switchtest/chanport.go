// Package switchtest provides a fake switch port backed by channels, for
// tests of the switch and of anything that plugs ports into it.
package switchtest

import (
	"golang.org/x/sys/unix"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/offload"
)

// ChanPort is a switch port whose received frames are whatever the test
// Injects, and whose transmitted frames come out of Out.
type ChanPort struct {
	name     string
	in       chan []byte
	Out      chan []byte
	wake     int
	counters vswitch.Counters
	held     [][]byte
}

// NewChanPort returns a port that buffers up to depth frames each way.
func NewChanPort(name string, depth int) *ChanPort {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		panic(err)
	}
	return &ChanPort{name: name, in: make(chan []byte, depth), Out: make(chan []byte, depth), wake: fd}
}

// Inject makes the port receive frame, waking its poller.
func (p *ChanPort) Inject(frame []byte) {
	p.in <- append([]byte(nil), frame...)
	unix.Write(p.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

// InjectQuiet makes the port receive frame without waking its poller, as
// a device without interrupts would.
func (p *ChanPort) InjectQuiet(frame []byte) { p.in <- append([]byte(nil), frame...) }

// Close releases the port's eventfd.
func (p *ChanPort) Close() { unix.Close(p.wake) }

// Name implements vswitch.Port.
func (p *ChanPort) Name() string { return p.name }

// Attach implements vswitch.Port.
func (p *ChanPort) Attach(vswitch.Control) {}

var (
	_ vswitch.Port     = (*ChanPort)(nil)
	_ vswitch.Receiver = (*ChanPort)(nil)
)

// Counters implements vswitch.Receiver.
func (p *ChanPort) Counters() *vswitch.Counters { return &p.counters }

// Stats implements vswitch.Port.
func (p *ChanPort) Stats() vswitch.Snapshot { return p.counters.Snapshot() }

// WaitFDs implements vswitch.Receiver.
func (p *ChanPort) WaitFDs(dst []int) []int { return append(dst, p.wake) }

// Arm implements vswitch.Receiver.
func (p *ChanPort) Arm() bool { return len(p.in) > 0 }

// Receive implements vswitch.Receiver.
func (p *ChanPort) Receive(b *vswitch.Burst) int {
	n := 0
	for n < vswitch.BurstSize {
		select {
		case f := <-p.in:
			b.Frames[n].Segs = append(b.SegPool(n), f)
			b.Frames[n].Len = len(f)
			b.Frames[n].Offload = offload.Meta{}
			n++
		default:
			b.N = n
			return n
		}
	}
	b.N = n
	return n
}

// Done implements vswitch.Receiver.
func (p *ChanPort) Done(*vswitch.Burst) {}

// Transmit implements vswitch.Port.
func (p *ChanPort) Transmit(_ int, frames []*vswitch.Frame) {
	for _, f := range frames {
		out := make([]byte, 0, f.Len)
		for _, s := range f.Segs {
			out = append(out, s...)
		}
		select {
		case p.Out <- out:
			p.counters.TxPackets.Add(1)
			p.counters.TxBytes.Add(uint64(len(out)))
		default:
			p.counters.Drops[vswitch.DropTxNoBuffers].Add(1)
		}
	}
}
