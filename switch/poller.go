package vswitch

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// poller is one goroutine, locked to an OS thread, that runs the receive
// side of the ports it owns: bursts while there is traffic, then a short
// spin, then sleep in epoll on the ports' kick fds and its wake eventfd.
type poller struct {
	s  *Switch
	id int

	// qs counts quiescent points, where the poller holds no port state:
	// it grows by 2 at the top of every loop, and is odd while the poller
	// sleeps or is not running. quiesce waits for it to move. One atomic
	// add per loop: each is a full fence on amd64, which drains the
	// burst's pending stores to guest memory, so the loop has as few as
	// it can.
	qs       atomic.Uint64
	gen      atomic.Uint64 // bumped by the control path on any port change
	stopping atomic.Bool
	load     atomic.Int32

	ownedMu sync.Mutex // serialises writers of owned
	owned   atomic.Pointer[[]int]

	wakeFD int
	epfd   int
	// idleWait is the epoll timeout while asleep, in ms: the shortest
	// IdlePoll of the ports this poller touches, else a safety net.
	idleWait int

	// Scratch, owned by the poller goroutine.
	burst   Burst
	lists   [MaxPorts][BurstSize]*Frame
	counts  [MaxPorts]uint8
	touched []int
	hdr     [12]byte
	fds     []int
	events  [64]unix.EpollEvent
	drain   [8]byte
}

func newPoller(s *Switch, id int) (*poller, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{s: s, id: id, wakeFD: fd, epfd: -1, idleWait: 1000, touched: make([]int, 0, MaxPorts)}
	p.qs.Store(1) // not running: quiesce need not wait for it
	p.owned.Store(&[]int{})
	return p, nil
}

func (p *poller) close() {
	if p.epfd >= 0 {
		unix.Close(p.epfd)
		p.epfd = -1
	}
	if p.wakeFD >= 0 {
		unix.Close(p.wakeFD)
		p.wakeFD = -1
	}
}

var one = [8]byte{1}

func (p *poller) wake() { unix.Write(p.wakeFD, one[:]) }

func (p *poller) addOwned(idx int) {
	p.ownedMu.Lock()
	defer p.ownedMu.Unlock()
	n := append(append([]int(nil), *p.owned.Load()...), idx)
	p.owned.Store(&n)
}

func (p *poller) removeOwned(idx int) {
	p.ownedMu.Lock()
	defer p.ownedMu.Unlock()
	var n []int
	for _, i := range *p.owned.Load() {
		if i != idx {
			n = append(n, i)
		}
	}
	p.owned.Store(&n)
}

func (p *poller) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	log := p.s.log.WithField("poller", p.id)
	log.Debug("poller started")
	defer log.Debug("poller stopped")
	seenGen := ^uint64(0)
	idle := int64(p.s.cfg.IdleSpin)
	lastWork := p.s.now()
	p.qs.Add(1) // running
	defer p.qs.Add(1)
	for !p.stopping.Load() {
		p.qs.Add(2)
		if g := p.gen.Load(); g != seenGen {
			seenGen = g
			if err := p.rebuild(); err != nil {
				log.WithError(err).Error("rebuild poller wait set")
			}
		}
		t := p.s.table.Load()
		owned := *p.owned.Load()
		now := p.s.now()
		work := 0
		for _, idx := range owned {
			if port := t.ports[idx]; port != nil {
				work += p.forward(t, idx, port, now)
			}
		}
		if work > 0 {
			lastWork = now
			continue
		}
		if now-lastWork < idle {
			continue
		}
		pending := false
		for _, idx := range owned {
			if port := t.ports[idx]; port != nil && port.Arm() {
				pending = true
			}
		}
		if pending || p.gen.Load() != seenGen {
			continue
		}
		p.qs.Add(1) // asleep: holds nothing
		fired := p.sleep()
		p.qs.Add(1)
		if !fired {
			// Woken by the timeout alone (a port polled at intervals):
			// look once and sleep again, without the spin, which is
			// meant for traffic that has only just stopped.
			lastWork = p.s.now() - idle
			continue
		}
		lastWork = p.s.now()
	}
}

// rebuild makes a fresh epoll set from the owned ports' wait fds. A fresh
// set, rather than an edit, because a closed fd's number may be reused by
// a new fd that the old set would then wrongly think it holds.
func (p *poller) rebuild() error {
	if p.epfd >= 0 {
		unix.Close(p.epfd)
		p.epfd = -1
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	p.epfd = ep
	p.fds = append(p.fds[:0], p.wakeFD)
	t := p.s.table.Load()
	p.idleWait = 1000
	for _, idx := range *p.owned.Load() {
		port := t.ports[idx]
		if port == nil {
			continue
		}
		p.fds = port.WaitFDs(p.fds)
		if ip, ok := port.(IdlePoller); ok {
			if ms := int(ip.IdlePoll().Milliseconds()); ms < p.idleWait {
				p.idleWait = max(ms, 1)
			}
		}
	}
	var errs []error
	for _, fd := range p.fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil && err != unix.EEXIST {
			errs = append(errs, fmt.Errorf("watch fd %d: %w", fd, err))
		}
	}
	// Any poller may transmit to any port: attach this thread to all. A
	// failure is reported but leaves the wait set complete.
	for i := 0; i < t.n; i++ {
		if ta, ok := t.ports[i].(ThreadAttacher); ok {
			if err := ta.AttachThread(); err != nil {
				errs = append(errs, fmt.Errorf("attach poller thread to port %s: %w", t.ports[i].Name(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// sleep blocks until a kick, a wake, or idleWait passes (a second, as a
// safety net, unless a port asked to be polled more often), then drains
// what fired.
//
// It reports whether an fd fired (false: timeout or EINTR).
func (p *poller) sleep() bool {
	if p.epfd < 0 {
		time.Sleep(10 * time.Millisecond)
		return false
	}
	n, err := unix.EpollWait(p.epfd, p.events[:], p.idleWait)
	if err != nil {
		return false // EINTR: the loop comes back here if still idle
	}
	for i := 0; i < n; i++ {
		unix.Read(int(p.events[i].Fd), p.drain[:])
	}
	return n > 0
}

// forward moves one burst from the port at src to its destinations.
func (p *poller) forward(t *portTable, src int, port Port, now int64) int {
	b := &p.burst
	n := port.Receive(b)
	if n == 0 {
		port.Done(b) // chains may have been consumed and dropped
		return 0
	}
	fdb := p.s.fdb
	var bytes, runts, same uint64
	// Frames of a burst mostly share their addresses: remember the last
	// ones so the FDB is consulted once per change, not once per frame.
	lastSrc, lastDst, lastOut := MAC(1<<48), MAC(1<<48), -1
	for i := 0; i < n; i++ {
		f := &b.Frames[i]
		if f.Len < 14 {
			runts++
			continue
		}
		bytes += uint64(f.Len)
		var dst, srcMAC MAC
		if s0 := f.Segs[0]; len(s0) >= 12 {
			dst, srcMAC = macOf(s0), macOf(s0[6:])
		} else {
			gather(p.hdr[:], f.Segs)
			dst, srcMAC = macOf(p.hdr[:]), macOf(p.hdr[6:])
		}
		if srcMAC != lastSrc && !srcMAC.Multicast() {
			fdb.Learn(srcMAC, src, now)
			lastSrc = srcMAC
			lastDst = MAC(1 << 48) // learning may have changed the answer
		}
		if !dst.Multicast() {
			out := lastOut
			if dst != lastDst {
				out = fdb.Lookup(dst)
				lastDst, lastOut = dst, out
			}
			if out >= 0 {
				if out == src {
					same++
					continue
				}
				if out < t.n && t.ports[out] != nil {
					p.add(out, f)
					continue
				}
			}
		}
		for j := 0; j < t.n; j++ {
			if j != src && t.ports[j] != nil {
				p.add(j, f)
			}
		}
	}
	for _, d := range p.touched {
		t.ports[d].Transmit(p.lists[d][:p.counts[d]])
		p.counts[d] = 0
	}
	p.touched = p.touched[:0]
	port.Done(b)
	c := port.Counters()
	c.RxPackets.Add(uint64(n) - runts)
	c.RxBytes.Add(bytes)
	if runts > 0 {
		c.Drops[DropRxRunt].Add(runts)
	}
	if same > 0 {
		c.Drops[DropSamePort].Add(same)
	}
	return n
}

func (p *poller) add(d int, f *Frame) {
	if p.counts[d] == 0 {
		p.touched = append(p.touched, d)
	}
	p.lists[d][p.counts[d]] = f
	p.counts[d]++
}
