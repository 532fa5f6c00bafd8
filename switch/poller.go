package vswitch

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/switch/tsc"
)

// poller is one goroutine, locked to an OS thread, that runs the receivers
// it owns (whole ports, or lanes of multi-queue ports): bursts while there
// is traffic, then a short spin, then sleep in epoll on the receivers' kick
// fds and its wake eventfd.
type poller struct {
	s  *Switch
	id int
	// cpu is the CPU the poller's thread is pinned to, -1 for none; tid
	// is the thread's id while the poller runs, 0 otherwise.
	cpu int
	tid atomic.Int32

	// gen is bumped by the control path on any port change; the poller
	// answers in ack, at the top of its loop (where it holds no port
	// state), once it has seen the change: from then on it loads only the
	// new state. parked is set while the poller sleeps or is not running,
	// when it holds nothing and need not answer. Between changes the loop
	// costs one plain load of gen, and no locked instruction: each is a
	// full fence on amd64, which would stall the poller until every store
	// of its last burst to guest memory had drained.
	gen      atomic.Uint64
	ack      atomic.Uint64
	parked   atomic.Bool
	stopping atomic.Bool
	// ports is how many ports have their first (or only) receiver here:
	// the one that carries traffic whatever queues the frontend runs.
	// Guarded by the switch's mu.
	ports int

	ownedMu sync.Mutex // serialises writers of owned
	owned   atomic.Pointer[[]unit]

	wakeFD int
	epfd   int
	// idleWait is the epoll timeout while asleep, in ms: the shortest
	// IdlePoll of the ports this poller touches, else a safety net.
	idleWait int

	// Scratch, owned by the poller goroutine.
	burst   Burst
	calls   callBatch // decided at the end of each pass of the loop
	lists   [MaxPorts][BurstSize]*Frame
	counts  [MaxPorts]uint8
	touched []int
	hdr     [12]byte
	// macs and pinSegs hold the frames of a port with port security
	// as forward passes them on: the addresses it checked, from here,
	// then the rest of the frame (see pin).
	macs    [BurstSize][12]byte
	pinSegs [BurstSize * (MaxSegs + 1)][]byte
	fds     []int
	noDrain []int // those of fds the poller must not read (NoDrainer)
	events  [64]unix.EpollEvent
	drain   [8]byte

	// What a guest memory fault may interrupt (see fault.go): the port
	// table of the loop, the receiver whose burst is in progress, and
	// whether the restarted loop has to settle what the fault left.
	t        *portTable
	busy     Receiver
	settling bool
	// unsorted is the frames of forward's burst while it sorts them,
	// before its receiver's counters have them: a fault then (in the
	// source's memory, the only guest memory sorting reads) loses them
	// all.
	unsorted int
	// receiving is set while forward's receiver takes its burst, and
	// txDst is the port forward is transmitting into (-1: none): where
	// an error cut the burst short (internal.go).
	receiving bool
	txDst     int

	// load is how the poller spent its time (see load.go).
	load pollerLoad
}

func newPoller(s *Switch, id int) (*poller, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{s: s, id: id, wakeFD: fd, epfd: -1, idleWait: 1000, touched: make([]int, 0, MaxPorts), txDst: -1}
	p.burst.calls = &p.calls
	p.parked.Store(true) // not running: quiesce need not wait for it
	p.owned.Store(&[]unit{})
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

// pinThread binds the calling OS thread to cpu.
func pinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin thread %d to CPU %d: %w", unix.Gettid(), cpu, err)
	}
	return nil
}

func (p *poller) wake() { unix.Write(p.wakeFD, one[:]) }

// unit is what a poller owns: one receiver of the port at index idx.
type unit struct {
	idx   int
	r     Receiver
	first bool // the port's first receiver
}

func (p *poller) addOwned(u unit) {
	p.ownedMu.Lock()
	defer p.ownedMu.Unlock()
	n := append(append([]unit(nil), *p.owned.Load()...), u)
	p.owned.Store(&n)
}

// removeOwned drops the receivers of the port at idx and reports whether
// it had the port's first one.
func (p *poller) removeOwned(idx int) (first bool) {
	p.ownedMu.Lock()
	defer p.ownedMu.Unlock()
	var n []unit
	for _, u := range *p.owned.Load() {
		if u.idx != idx {
			n = append(n, u)
		} else if u.first {
			first = true
		}
	}
	p.owned.Store(&n)
	return first
}

func (p *poller) run() {
	runtime.LockOSThread()
	log := p.s.log.WithField("poller", p.id)
	// Pinned, the thread gets its mask back before it is unlocked, so
	// that what Go runs on it next may use the process's CPUs again.
	var mask unix.CPUSet
	pinned := false
	if p.cpu >= 0 {
		err := unix.SchedGetaffinity(0, &mask)
		if err == nil {
			err = pinThread(p.cpu)
		}
		if err != nil {
			// The daemon checked the CPU against its mask at start; a
			// cpuset changed since is worth a line, not the poller.
			log.WithError(err).WithField("cpu", p.cpu).Error("poller not pinned: it runs on any CPU the process may use")
		} else {
			pinned = true
			log.WithField("cpu", p.cpu).Debug("poller pinned")
		}
	}
	defer func() {
		if pinned && unix.SchedSetaffinity(0, &mask) != nil {
			// Still locked when the goroutine ends: Go ends the thread
			// rather than reuse it with one CPU.
			return
		}
		runtime.UnlockOSThread()
	}()
	p.tid.Store(int32(unix.Gettid()))
	defer p.tid.Store(0)
	// A guest that shrinks its memory under us makes our next access to
	// it SIGBUS: a panic with this, recovered by guarded, instead of the
	// end of the daemon. (Per goroutine; this one owns its thread.)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	log.Debug("poller started")
	defer log.Debug("poller stopped")
	p.parked.Store(false)
	defer p.parked.Store(true)
	for p.guarded(log, p.loop) {
	}
}

// guarded runs body, the poller loop, until the poller stops (false) or a
// guest memory fault cuts it short (true, once the fault is dealt with:
// run starts the loop again). The recover frame is set up once per start
// of the loop, so it costs the bursts nothing.
func (p *poller) guarded(log *logrus.Entry, body func(*logrus.Entry)) (faulted bool) {
	defer func() {
		if r := recover(); r != nil {
			p.onFault(r, log) // panics again unless a guest's memory faulted
			faulted = true
		}
	}()
	if p.settling {
		p.settle()
	}
	body(log)
	return false
}

// loop is the poller's life: bursts, idle spin, sleep. It starts from
// scratch each time, re-reading the configuration first.
func (p *poller) loop(log *logrus.Entry) {
	seenGen := ^uint64(0)
	idle := int64(p.s.cfg.IdleSpin)
	// The clock is read rarely: in a VM one read costs about as much as
	// forwarding a frame, and all it does here is date FDB entries (aged
	// in seconds) and time the idle spin (tens of microseconds).
	now := p.s.now()
	idleSince := int64(-1) // when polls started to come back empty; -1: busy
	busy, empty := 0, 0    // loops with work, and empty loops in a row
	// Each pass of the loop is timed with the TSC, once, at the end of
	// its polls: a pass that moved frames is busy time, any other (empty
	// polls, the idle spin, sleep) idle time.
	mark := tsc.Now()
	for !p.stopping.Load() {
		if g := p.gen.Load(); g != seenGen {
			seenGen = g
			if err := p.rebuild(); err != nil {
				log.WithError(err).Error("rebuild poller wait set")
			}
			p.ack.Store(g)
		}
		t := p.s.table.Load()
		p.t = t
		owned := *p.owned.Load()
		work := 0
		for _, u := range owned {
			if t.ports[u.idx] != nil {
				p.busy = u.r
				work += p.forward(t, u.idx, u.r, now)
				p.busy = nil
			}
		}
		// One fence for every ring the pass published (callbatch.go).
		p.calls.flush()
		mark = p.load.account(mark, work)
		if work > 0 {
			empty, idleSince = 0, -1
			if busy++; busy%clockEvery == 0 {
				now = p.s.now()
			}
			continue
		}
		// Under load, polls come back empty too while the driver refills
		// its ring: look at the clock, and start the idle spin, only after
		// clockEvery empty polls in a row.
		if empty++; empty%clockEvery != 0 {
			continue
		}
		now = p.s.now()
		if idleSince < 0 {
			idleSince = now
		}
		if now-idleSince < idle {
			continue
		}
		pending := false
		for _, u := range owned {
			if t.ports[u.idx] != nil && u.r.Arm() {
				pending = true
			}
		}
		if pending || p.gen.Load() != seenGen {
			continue
		}
		mark = p.load.sleep(mark)
		p.parked.Store(true) // asleep: holds nothing
		fired := p.sleep()
		p.parked.Store(false)
		mark = p.load.wake(mark)
		now, empty = p.s.now(), 0
		if fired {
			idleSince = -1
		} else {
			// Woken by the timeout alone (a port polled at intervals):
			// look once and sleep again, without the spin, which is
			// meant for traffic that has only just stopped.
			idleSince = now - idle
		}
	}
}

// clockEvery is how many busy loops, or empty ones in a row, pass between
// two reads of the clock.
const clockEvery = 16

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
	p.noDrain = p.noDrain[:0]
	t := p.s.table.Load()
	p.idleWait = 1000
	for _, u := range *p.owned.Load() {
		if t.ports[u.idx] == nil {
			continue
		}
		n := len(p.fds)
		p.fds = u.r.WaitFDs(p.fds)
		if nd, ok := u.r.(NoDrainer); ok {
			for _, fd := range p.fds[n:] {
				if nd.NoDrain(fd) {
					p.noDrain = append(p.noDrain, fd)
				}
			}
		}
		if ip, ok := u.r.(IdlePoller); ok {
			if ms := int(ip.IdlePoll().Milliseconds()); ms < p.idleWait {
				p.idleWait = max(ms, 1)
			}
		}
	}
	var errs []error
	for _, fd := range p.fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if slices.Contains(p.noDrain, fd) {
			// Edge-triggered and never read (see NoDrainer). epoll hands
			// the 64-bit data word back as given: its upper half (Pad)
			// tells sleep not to read the fd, with no lookup there.
			ev.Events |= unix.EPOLLET
			ev.Pad = noDrainMark
		}
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

// noDrainMark marks, in an epoll event's data word, an fd that sleep must
// not read.
const noDrainMark = 1

// sleep blocks until a kick, a wake, or idleWait passes (a second, as a
// safety net, unless a port asked to be polled more often), then drains
// what fired, except the fds that must not be read (NoDrainer).
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
		if p.events[i].Pad != noDrainMark {
			unix.Read(int(p.events[i].Fd), p.drain[:])
		}
	}
	return n > 0
}

// forward moves one burst from rx, a receiver of the port at src, to its
// destinations.
func (p *poller) forward(t *portTable, src int, rx Receiver, now int64) int {
	b := &p.burst
	p.receiving = true
	n := rx.Receive(b)
	p.receiving = false
	if n == 0 {
		rx.Done(b) // chains may have been consumed and dropped
		return 0
	}
	p.unsorted = n
	probeBug(b, n) // nothing, but in a test build (bugprobe.go)
	fdb := p.s.fdb
	var bytes, runts, same, spoofed uint64
	var unlearned [numLearnResults]uint64
	// Port security: each frame's source address, masked, must equal
	// want. For a port without a policy both are 0 and every address
	// passes; for a pinned port the mask keeps the whole address; for a
	// "learn" port not locked yet, want is wantPending, which no address
	// equals: such frames take the slow path (see lockMAC).
	want := p.s.sec[src].want.Load()
	mask := ^uint64(0)
	if want == 0 {
		mask = 0
	}
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
			dst, srcMAC = macsOf(s0)
		} else {
			Gather(p.hdr[:], f.Segs)
			dst, srcMAC = macsOf(p.hdr[:])
		}
		if uint64(srcMAC)&mask != want {
			if want != wantPending {
				spoofed++
				continue
			}
			if want = p.s.lockMAC(src, srcMAC); want != uint64(srcMAC) {
				spoofed++
				continue
			}
		}
		if mask != 0 {
			p.pin(f, i, dst, srcMAC)
		}
		if srcMAC != lastSrc && !srcMAC.Multicast() {
			if r := fdb.Learn(srcMAC, src, now); r == Learned {
				lastSrc = srcMAC
				lastDst = MAC(1 << 48) // learning may have changed the answer
			} else {
				// Not remembered, so that each frame from an address
				// the FDB does not take is counted; Learn refuses
				// without a lock.
				unlearned[r]++
			}
		}
		if !dst.Multicast() {
			out := lastOut
			if dst != lastDst {
				// Checked once per change of address: a port
				// the table no longer has floods, as unknown.
				if out = fdb.Lookup(dst); out != src && (out >= t.n || out >= 0 && t.ports[out] == nil) {
					out = -1
				}
				lastDst, lastOut = dst, out
			}
			if out >= 0 {
				if out == src {
					same++
					continue
				}
				p.add(out, f)
				if srcMAC == lastSrc {
					// Learned this burst, so it passed the
					// checks above: the frames that follow with
					// the same addresses go the same way.
					j, nb := p.sameRun(b, i+1, n, dst, srcMAC, out)
					if mask != 0 {
						for k := i + 1; k < j; k++ {
							p.pin(&b.Frames[k], k, dst, srcMAC)
						}
					}
					bytes += nb
					i = j - 1
				}
				continue
			}
		}
		for j := 0; j < t.n; j++ {
			if j != src && t.ports[j] != nil {
				p.add(j, f)
			}
		}
	}
	// Counted before the transmits: a fault in a destination's memory
	// ends forward in one of them, and the source's counts must not go
	// with it. This poller owns the receiver: the only writer of its
	// counters.
	c := rx.Counters()
	c.RxPackets.addOwned(uint64(n) - runts)
	c.RxBytes.addOwned(bytes)
	if runts > 0 {
		c.Drops[DropRxRunt].addOwned(runts)
	}
	if same > 0 {
		c.Drops[DropSamePort].addOwned(same)
	}
	if spoofed > 0 {
		c.Drops[DropRxSpoofed].addOwned(spoofed)
	}
	if unlearned != ([numLearnResults]uint64{}) {
		c.FDBMovesRefused.addOwned(unlearned[LearnRefused])
		c.FDBLearnLimited.addOwned(unlearned[LearnLimited])
		c.FDBFull.addOwned(unlearned[LearnFull])
	}
	p.unsorted = 0
	for _, d := range p.touched {
		p.txDst = d
		t.ports[d].Transmit(p.id, p.lists[d][:p.counts[d]])
		p.counts[d] = 0
	}
	p.txDst = -1
	p.touched = p.touched[:0]
	rx.Done(b)
	return n
}

// sameRun adds b.Frames[i:n] to the list of port out, which has the
// frame before them, while they carry the addresses dst and src, and
// returns the index of the first that does not (or is a runt, or has its
// addresses split across segments: forward's loop decides those) and the
// bytes added. It is forward's loop for a burst of one flow, the common
// case, without its per-frame state: learning, lookups and port security
// have given their answer for these addresses already. (A port with
// port security has the frames pinned to them afterwards: see pin.)
func (p *poller) sameRun(b *Burst, i, n int, dst, src MAC, out int) (int, uint64) {
	list, c := &p.lists[out], p.counts[out]
	var bytes uint64
	for ; i < n; i++ {
		// The length first: a chain that held only its virtio-net
		// header is a frame without segments.
		f := &b.Frames[i]
		if f.Len < 14 {
			break
		}
		s0 := f.Segs[0]
		if len(s0) < 12 {
			break
		}
		if d, s := macsOf(s0); d != dst || s != src {
			break
		}
		list[c] = f
		c++
		bytes += uint64(f.Len)
	}
	p.counts[out] = c
	return i, bytes
}

// pin makes frame i of the burst, f, of a port with port security,
// begin with the addresses forward checked, dst and src, held in the
// poller's memory, followed by the rest of the frame. The guest's buffer
// stays in guest memory, which the guest may write at any time: copied
// from there, the frame could reach its receivers from an address other
// than the one its port is pinned to.
func (p *poller) pin(f *Frame, i int, dst, src MAC) {
	m := &p.macs[i]
	putMAC(m[:6], dst)
	putMAC(m[6:], src)
	segs := p.pinSegs[i*(MaxSegs+1) : i*(MaxSegs+1) : (i+1)*(MaxSegs+1)]
	segs = append(segs, m[:])
	skip := len(m)
	for _, s := range f.Segs {
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		segs = append(segs, s[skip:])
		skip = 0
	}
	f.Segs = segs
}

func (p *poller) add(d int, f *Frame) {
	if p.counts[d] == 0 {
		p.touched = append(p.touched, d)
	}
	p.lists[d][p.counts[d]] = f
	p.counts[d]++
}
