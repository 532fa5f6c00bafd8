package vswitch

import (
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue/release"
)

// A frontend's call eventfd is shared with it: the frontend can clear
// O_NONBLOCK on it again (the flag lives on the open file description,
// and Linux has no private description of an eventfd), then fill its
// counter to 0xfffffffffffffffe. The poller's next write of 1 then blocks,
// and with it every port of that poller, and every control-path change,
// which waits for the pollers. A check before each write would cost a
// syscall per call and still race. Instead each writer announces the fd
// it is about to write (two plain stores around the syscall) and a
// watchdog frees a writer that stays in one write: reading the eventfd
// takes the count, which lets the blocked write complete, and the
// frontend's connection is then dropped, since it did this on purpose.

// callGuard belongs to one writer of call eventfds at a time: a receive
// lane (its poller signals the guest's transmit rings) or a transmit
// queue (its holder signals a receive ring).
type callGuard struct {
	// state is seq<<32 | (fd+1) while the writer is in write(2) on fd,
	// seq<<32 otherwise. Written by the writer with release stores, read
	// by the watchdog.
	state uint64
	// queue is the virtqueue index of the ring being signalled, for the
	// log; written like state.
	queue uint64
	seq   uint32 // the writer's; incremented per write

	// The watchdog's own: the state it saw last, and how often in a row.
	seen   uint64
	stalls int
}

// call signals the driver through eventfd fd. A full counter (EAGAIN on a
// non-blocking eventfd) means the driver has a signal pending already,
// so the error is ignored.
func (g *callGuard) call(fd, queue int) {
	g.seq++
	if uint64(queue) != g.queue {
		release.Store64(&g.queue, uint64(queue))
	}
	release.Store64(&g.state, uint64(g.seq)<<32|uint64(uint32(fd+1)))
	unix.Write(fd, one[:])
	release.Store64(&g.state, uint64(g.seq)<<32)
}

// stuckChecks is how many watchdog ticks a writer may spend in one write
// before it is freed: a write of an eventfd never waits otherwise.
const stuckChecks = 2

// watchdogEvery is the watchdog's tick.
const watchdogEvery = 100 * time.Millisecond

// check is the watchdog's look at g. It returns the fd a writer is stuck
// on, or -1.
func (g *callGuard) check() int {
	st := atomic.LoadUint64(&g.state)
	if uint32(st) == 0 || st != g.seen {
		g.seen, g.stalls = st, 0
		return -1
	}
	if g.stalls++; g.stalls < stuckChecks {
		return -1
	}
	return int(uint32(st)) - 1
}

// freeWriter takes the count of eventfd fd so that a write blocked on it
// completes. It runs on a goroutine of its own: if the frontend drains
// the fd first, the blocked write completes anyway, and this read may
// block in turn on an fd made blocking, until the connection's teardown
// closes it.
func freeWriter(fd int) {
	var b [8]byte
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 0); n > 0 {
		unix.Read(fd, b[:])
	}
}

// watchdog frees pollers stuck writing a call eventfd, until stop is
// closed, and drops the frontend that did it.
func (s *Switch) watchdog(stop <-chan struct{}) {
	defer s.wg.Done()
	t := time.NewTicker(watchdogEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		tbl := s.table.Load()
		for i := 0; i < tbl.n; i++ {
			if v, ok := tbl.ports[i].(*VMPort); ok {
				v.checkCalls()
			}
		}
	}
}

// checkCalls frees a writer of the port's call eventfds that is stuck and
// drops the port's frontend.
func (v *VMPort) checkCalls() {
	for _, l := range v.lanes {
		v.checkGuard(&l.calls)
	}
	for _, t := range v.txqs {
		v.checkGuard(&t.calls)
	}
}

func (v *VMPort) checkGuard(g *callGuard) {
	fd := g.check()
	if fd < 0 {
		return
	}
	g.stalls = 0
	go freeWriter(fd)
	v.fail(fmt.Errorf("queue %d: a write of its call eventfd blocked for %v: the frontend made the eventfd blocking and filled its counter; dropping the connection", atomic.LoadUint64(&g.queue), stuckChecks*watchdogEvery))
}
