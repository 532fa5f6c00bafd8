package vswitch_test

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/switchtest"
)

// queuePort receives frames from a SOCK_SEQPACKET socket, one frame per
// message, and waits on that same socket, as a DPDK net_tap uplink waits
// on its tap queue: a read of the wait fd by anyone but Receive takes a
// frame. It is a NoDrainer.
type queuePort struct {
	*switchtest.ChanPort // name, counters, Transmit
	rd, wr               int
	buf                  [vswitch.BurstSize][2048]byte
}

func newQueuePort(t *testing.T, name string) *queuePort {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &queuePort{ChanPort: switchtest.NewChanPort(name, 8), rd: fds[0], wr: fds[1]}
	t.Cleanup(func() {
		unix.Close(p.rd)
		unix.Close(p.wr)
		p.ChanPort.Close()
	})
	return p
}

func (p *queuePort) WaitFDs(dst []int) []int { return append(dst, p.rd) }
func (p *queuePort) NoDrain(fd int) bool     { return fd == p.rd }
func (p *queuePort) Arm() bool               { return false } // the fd is the queue: nothing to enable

func (p *queuePort) Receive(b *vswitch.Burst) int {
	n := 0
	for n < vswitch.BurstSize {
		l, err := unix.Read(p.rd, p.buf[n][:])
		if err != nil || l <= 0 {
			break
		}
		b.Frames[n].Segs = append(b.SegPool(n), p.buf[n][:l])
		b.Frames[n].Len = l
		n++
	}
	b.N = n
	return n
}

// TestNoDrainFDNotRead checks the poller's side of NoDrainer: a port's
// wait fd that must not be read wakes the sleeping poller, is never read
// by it (every frame reaches the other port, none is eaten by the drain),
// and does not keep the poller awake once the port has emptied it.
func TestNoDrainFDNotRead(t *testing.T) {
	s, err := vswitch.New(vswitch.Config{}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := newQueuePort(t, "queue")
	vm := switchtest.NewChanPort("vm", 64)
	defer vm.Close()
	s.AddPort(q)
	s.AddPort(vm)
	s.Start()
	for i := 0; i < 20; i++ {
		time.Sleep(10 * time.Millisecond) // asleep by now
		f := frame(bcast, macA, string(rune('a'+i))+" after idle")
		if _, err := unix.Write(q.wr, f); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-vm.Out:
			if !bytes.Equal(got, f) {
				t.Fatalf("frame %d: got %x, want %x", i, got, f)
			}
		case <-time.After(500 * time.Millisecond):
			t.Fatalf("frame %d not forwarded within 500ms: eaten by the drain, or the poller slept through it", i)
		}
	}
	before := cpuTime(t)
	time.Sleep(300 * time.Millisecond)
	if used := cpuTime(t) - before; used > 100*time.Millisecond {
		t.Fatalf("idle switch used %v of CPU in 300ms", used)
	}
}
