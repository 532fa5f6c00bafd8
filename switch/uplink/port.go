//go:build cgo

package uplink

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/switch/offload"
)

// The uplink hands the switch at most BurstSize frames per Receive, which
// the binding must be able to hold.
var _ [dpdk.MaxBurst - vswitch.BurstSize]struct{}

const (
	// DefaultMTU is the uplink MTU when none is configured.
	DefaultMTU = 1500
	// MaxMTU is the largest uplink MTU vhostd accepts.
	MaxMTU = 9600
	// MinMTU is the smallest (IPv4's minimum).
	MinMTU = 68
	// frameOverhead is what a frame carries beyond its MTU: the Ethernet
	// header and one VLAN tag (frames in vhostd have no FCS).
	frameOverhead = 14 + 4
	// defaultDataRoom is DPDK's usual mbuf size (RTE_MBUF_DEFAULT_BUF_SIZE),
	// the smallest vhostd uses so that every PMD is content.
	defaultDataRoom = 2048 + dpdk.Headroom
	mempoolCache    = 128
)

// Config describes an uplink.
type Config struct {
	Name    string // switch port name; default "uplink"
	Devargs string // DPDK devargs of the device
	MTU     int    // largest IP packet; default DefaultMTU
	RxDesc  int    // receive ring size; default 512
	TxDesc  int    // transmit ring size; default 512
	// Pollers is the number of poller threads that may touch the mbuf
	// pool (it sizes the pool for their caches); default 1.
	Pollers int
	// LinkPoll is how often the link state is read; default 500ms.
	LinkPoll time.Duration
	// IdlePoll is how long an idle poller may sleep between looks at a
	// device without rx interrupts; default 1ms.
	IdlePoll time.Duration
	// IntrIdlePoll is the same for a device with rx interrupts, a safety
	// net: net_vhost turns the frontend's kicks off again when a frontend
	// connects, so a poller asleep since before then learns of the first
	// frames only by looking; default 100ms.
	IntrIdlePoll time.Duration
}

func (c *Config) defaults() {
	if c.Name == "" {
		c.Name = "uplink"
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.RxDesc == 0 {
		c.RxDesc = 512
	}
	if c.TxDesc == 0 {
		c.TxDesc = 512
	}
	if c.Pollers <= 0 {
		c.Pollers = 1
	}
	if c.LinkPoll == 0 {
		c.LinkPoll = 500 * time.Millisecond
	}
	if c.IdlePoll == 0 {
		c.IdlePoll = time.Millisecond
	}
	if c.IntrIdlePoll == 0 {
		c.IntrIdlePoll = 100 * time.Millisecond
	}
}

// RxMode is how a sleeping poller learns that frames arrived at the
// uplink.
type RxMode int

const (
	// RxPolling: the device has no rx interrupts; the idle poller looks
	// every IdlePoll.
	RxPolling RxMode = iota
	// RxInterrupts: the device's rx interrupt fd wakes the poller.
	RxInterrupts
)

// String returns "interrupts" or "polling", as logs and status show it.
func (m RxMode) String() string {
	if m == RxInterrupts {
		return "interrupts"
	}
	return "polling"
}

// Port is a switch port on a DPDK ethdev. Receive and Done run on the
// poller that owns it; Transmit on any poller.
type Port struct {
	cfg      Config
	log      *logrus.Entry
	dev      *dpdk.Port
	pool     *dpdk.Mempool
	counters vswitch.Counters
	maxFrame int    // largest frame transmitted; larger ones drop as tx_too_big
	mac      string // the device's MAC
	iface    string // kernel interface behind the device, if any
	ifindex  int    // and its index
	// unpromisc is set when vhostd made the device promiscuous and must
	// undo it at Close: some PMDs (net_af_packet) set IFF_PROMISC on the
	// kernel interface and leave it set.
	unpromisc bool

	// How the receive side wakes a sleeping poller, fixed at Open.
	rxMode RxMode
	intrFD int  // the rx interrupt fd in RxInterrupts mode: never read
	rearm  bool // the interrupt is enabled per sleep (net_vhost, NICs; net_tap's fd needs nothing)

	// Owned by the poller that owns the port.
	rx    *dpdk.RxQueue
	armed bool // Arm enabled the interrupt; the next non-empty Receive disables it

	txMu sync.Mutex // serialises pollers transmitting
	tx   *dpdk.TxQueue
	// soft completes the offloads frames from VM ports left pending
	// (partial checksums, GSO super-frames) before they are copied into
	// mbufs: the device gets complete frames only. Under txMu.
	soft *vswitch.SoftOffload
	// The offloads the device was configured with (offload.go), and the
	// transmit side's scratch for deciding on one frame: under txMu.
	txOff, rxOff uint64
	txMeta       dpdk.TxMeta
	// txSegMax and txMTUSegMax are the device's limits on the mbufs of a
	// TSO frame's chain and of one of its segments (dpdk.DevInfo): a
	// frame beyond them is segmented in software. Tests lower them.
	txSegMax, txMTUSegMax int
	txLay                 offload.Layout
	txLin                 []byte
	// rxLin is where the receive side gathers a frame's headers: owned by
	// the poller.
	rxLin []byte
	offc  offloadCounters

	link        atomic.Pointer[LinkState]
	linkChanges atomic.Uint64
	stopMon     chan struct{}
	monDone     chan struct{}
	attachWarn  atomic.Bool
	armWarn     atomic.Bool
	closeOnce   sync.Once
	closeErr    error
}

// Open probes cfg.Devargs on eal, configures and starts the device and
// returns the port. On error, everything Open did is undone.
func Open(eal *dpdk.EAL, cfg Config, log *logrus.Entry) (_ *Port, err error) {
	cfg.defaults()
	if cfg.MTU < MinMTU || cfg.MTU > MaxMTU {
		return nil, fmt.Errorf("uplink MTU %d: use %d to %d", cfg.MTU, MinMTU, MaxMTU)
	}
	da, err := ParseDevargs(cfg.Devargs)
	if err != nil {
		return nil, err
	}
	if err := CheckInterfaces(da); err != nil {
		return nil, err
	}
	p := &Port{cfg: cfg, log: log.WithField("port", cfg.Name), maxFrame: cfg.MTU + frameOverhead, intrFD: -1, soft: vswitch.NewSoftOffload(true)}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if p.dev, err = eal.Probe(cfg.Devargs); err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	info, err := p.dev.Info()
	if err != nil {
		return nil, err
	}
	wasPromisc, ifaceMTU := false, 0
	if info.IfIndex > 0 {
		if l, err := netlink.LinkByIndex(info.IfIndex); err == nil {
			p.iface, p.ifindex = l.Attrs().Name, info.IfIndex
			wasPromisc = l.Attrs().RawFlags&unix.IFF_PROMISC != 0
			ifaceMTU = l.Attrs().MTU
		}
	}
	// An interface vhostd attaches to (net_af_packet) is the host's: vhostd
	// leaves its MTU alone and undoes its promiscuous mode at Close. A
	// net_tap interface is vhostd's own.
	hostIface := p.iface != "" && da.Driver() != "net_tap"
	mtu, err := p.chooseMTU(info)
	if err != nil {
		return nil, err
	}
	// One mbuf holds the largest frame (see the package documentation).
	room := max(defaultDataRoom, dpdk.Headroom+p.maxFrame)
	room = (room + 63) &^ 63
	n := poolSize(cfg)
	if p.pool, err = eal.NewPktmbufPool(n, mempoolCache, room); err != nil {
		return nil, fmt.Errorf("uplink %s: %w", cfg.Devargs, err)
	}
	txOff, rxOff := deviceOffloads(da.Driver(), info)
	if txOff&wantTx != 0 {
		p.txLin = make([]byte, maxOffloadFrame)
	}
	// Even without rx offloads configured a device may flag frames
	// (net_vhost with tso=1 receives GSO frames): the scratch is always
	// there.
	p.rxLin = make([]byte, maxOffloadFrame)
	p.txOff, p.rxOff = txOff&wantTx, rxOff
	p.txSegMax, p.txMTUSegMax = segLimit(info.TxSegMax), segLimit(info.TxMTUSegMax)
	if hostIface && ifaceMTU != mtu {
		p.log.WithFields(logrus.Fields{"interface": p.iface, "interface_mtu": ifaceMTU, "uplink_mtu": mtu}).
			Warn("the interface's MTU differs from the uplink MTU: frames larger than the smaller one are dropped")
	}
	p.rx = p.dev.NewRxQueue()
	pc := dpdk.PortConfig{MTU: mtu, RxDesc: cfg.RxDesc, TxDesc: cfg.TxDesc, Pool: p.pool, TxOffloads: txOff, RxOffloads: rxOff}
	// Rx interrupts where the driver has them, else polling: set the
	// device up again without them, so that a driver that half took them
	// runs none of its interrupt code.
	pollWhy := p.startWithInterrupts(pc, !hostIface)
	if pollWhy != nil {
		if err := p.dev.Stop(); err != nil {
			return nil, fmt.Errorf("uplink %s: stop to restart without rx interrupts: %w", cfg.Devargs, err)
		}
		if err := p.setup(pc, !hostIface); err != nil {
			if pc.TxOffloads&wantTx == 0 && pc.RxOffloads == 0 {
				return nil, err
			}
			// A driver that reports offloads and then refuses them:
			// run without, in software.
			p.log.WithError(err).Warn("the uplink device refused its offloads: they are done in software")
			p.dev.Stop()
			pc.TxOffloads &^= wantTx
			pc.RxOffloads = 0
			p.txOff, p.rxOff = 0, 0
			if err := p.setup(pc, !hostIface); err != nil {
				return nil, err
			}
		}
	}
	// After the start: the device was set up twice if it has no rx
	// interrupts, and ethdev restores the mode at every start.
	if err := p.dev.SetPromiscuous(true); err == nil {
		p.unpromisc = hostIface && !wasPromisc
	} else if !errors.Is(err, syscall.ENOTSUP) {
		p.log.WithError(err).Warn("cannot enable promiscuous mode: frames for guest MACs may not arrive")
	}
	if mac, err := p.dev.MAC(); err == nil {
		p.mac = mac.String()
	}
	p.tx = p.dev.NewTxQueue(p.pool)
	l, _ := p.readLink()
	p.link.Store(&l)
	f := logrus.Fields{
		"devargs": cfg.Devargs, "device": p.dev.Name(), "driver": p.dev.Driver(), "mac": p.mac,
		"mtu": cfg.MTU, "interface": p.iface, "link": l.String(), "mbufs": n, "mbuf_room": room,
		"rx_mode": p.rxMode.String(), "tx_offloads": dpdk.OffloadNames(p.txOff, true), "rx_offloads": dpdk.OffloadNames(p.rxOff, false),
		"tx_seg_max": p.txSegMax, "tx_mtu_seg_max": p.txMTUSegMax,
	}
	if pollWhy != nil {
		f["idle_poll"] = cfg.IdlePoll.String()
		f["why_polling"] = pollWhy.Error()
	}
	p.log.WithFields(f).Info("uplink started")
	p.stopMon, p.monDone = make(chan struct{}), make(chan struct{})
	go p.monitor()
	return p, nil
}

// segLimit is a device's limit on mbufs per frame as dev_info reports it;
// 0 (a PMD that cleared it) is taken as no limit.
func segLimit(n int) int {
	if n <= 0 {
		return math.MaxUint16
	}
	return n
}

// setup configures the device, sets its MTU unless the interface is the
// host's (setMTU false), and starts it.
func (p *Port) setup(pc dpdk.PortConfig, setMTU bool) error {
	if err := p.dev.Configure(pc); err != nil {
		return fmt.Errorf("uplink %s: %w", p.cfg.Devargs, err)
	}
	if setMTU {
		// Configure only records the MTU; setting it tells the PMD (net_tap
		// then sets its interface's MTU).
		if err := p.dev.SetMTU(pc.MTU); err != nil && !errors.Is(err, syscall.ENOTSUP) {
			return fmt.Errorf("uplink %s: %w", p.cfg.Devargs, err)
		}
	}
	if err := p.dev.Start(); err != nil {
		return fmt.Errorf("uplink %s: %w", p.cfg.Devargs, err)
	}
	return nil
}

// startWithInterrupts sets the device up with rx interrupts and takes its
// interrupt fd. It returns why the uplink must poll instead when the
// driver refuses any step: configure or start fails, it gives no fd (most
// virtual devices), or enabling the interrupt fails other than with
// ENOTSUP. ENOTSUP means there is nothing to enable: net_tap's fd is the
// tap queue, readable whenever frames wait.
func (p *Port) startWithInterrupts(pc dpdk.PortConfig, setMTU bool) error {
	pc.RxInterrupts = true
	if err := p.setup(pc, setMTU); err != nil {
		return err
	}
	fd, err := p.dev.RxInterruptFD()
	if err != nil {
		return err
	}
	// Try the enable once here, and leave the interrupt off: Arm turns it
	// on before each sleep.
	switch err := p.rx.EnableInterrupt(); {
	case errors.Is(err, syscall.ENOTSUP):
	case err != nil:
		return fmt.Errorf("enable rx interrupt: %w", err)
	default:
		if err := p.rx.DisableInterrupt(); err != nil {
			return fmt.Errorf("disable rx interrupt: %w", err)
		}
		p.rearm = true
	}
	p.rxMode, p.intrFD = RxInterrupts, fd
	return nil
}

// poolSize returns the mbufs the uplink needs: both rings full, the
// transmit stash, a burst in flight, and the per-lcore caches of every
// poller and the control thread; rounded to a power of two less one (the
// best size for a DPDK mempool), at least 4095.
func poolSize(c Config) int {
	need := c.RxDesc + c.TxDesc + 128 + 2*dpdk.MaxBurst + (c.Pollers+2)*mempoolCache*3/2
	return max(4095, 1<<bits.Len(uint(need))-1)
}

// chooseMTU checks that the device takes the uplink MTU. ethdev refuses an
// MTU whose frame exceeds what the PMD says it receives: DPDK 22.11's
// net_tap and net_af_packet say 1522 and 1518 bytes (and net_tap drops
// larger frames on transmit), so jumbo frames need a NIC, net_vhost or
// net_virtio_user.
func (p *Port) chooseMTU(info dpdk.DevInfo) (int, error) {
	limit := info.MaxMTU
	overhead := 18 // DPDK's default: Ethernet header and CRC
	if info.MaxMTU != 65535 && int(info.MaxRxPktLen) > info.MaxMTU {
		overhead = int(info.MaxRxPktLen) - info.MaxMTU
	}
	if l := int(info.MaxRxPktLen) - overhead; info.MaxRxPktLen != 0 && l < limit {
		limit = l
	}
	if p.cfg.MTU <= limit {
		return p.cfg.MTU, nil
	}
	return 0, fmt.Errorf("uplink %s: MTU %d is more than DPDK's %s supports (MTU %d, frames of %d bytes): lower the uplink MTU%s",
		p.cfg.Devargs, p.cfg.MTU, info.Driver, limit, info.MaxRxPktLen, driverMTUHint(info.Driver))
}

func driverMTUHint(driver string) string {
	switch driver {
	case "net_tap", "net_af_packet", "net_memif":
		return " (jumbo frames need a NIC, net_vhost or net_virtio_user)"
	}
	return ""
}

// Close stops the link monitor, stops and closes the device, and frees the
// mbufs and the pool. The port must be out of the switch (or the switch
// stopped): no poller may call it any more.
func (p *Port) Close() error {
	p.closeOnce.Do(func() {
		if p.stopMon != nil {
			close(p.stopMon)
			<-p.monDone
		}
		if p.rx != nil {
			p.rx.Close()
		}
		if p.tx != nil {
			p.tx.Close()
		}
		var errs []error
		if p.unpromisc {
			// ENODEV: the interface is gone or in another namespace.
			if err := p.dev.SetPromiscuous(false); err != nil && !errors.Is(err, syscall.ENODEV) {
				errs = append(errs, err)
			}
		}
		if p.dev != nil {
			if err := p.dev.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if p.pool != nil {
			if err := p.pool.Free(); err != nil {
				errs = append(errs, err)
			}
		}
		p.closeErr = errors.Join(errs...)
		if p.dev != nil && p.tx != nil { // it was started
			p.log.Info("uplink closed")
		}
	})
	return p.closeErr
}

// Name implements vswitch.Port.
func (p *Port) Name() string { return p.cfg.Name }

// Attach implements vswitch.Port. The uplink never changes its wait fds,
// so it keeps no Control.
func (p *Port) Attach(vswitch.Control) {}

// The uplink is a port with one receive lane, itself.
var (
	_ vswitch.Port     = (*Port)(nil)
	_ vswitch.Receiver = (*Port)(nil)
)

// Counters implements vswitch.Receiver.
func (p *Port) Counters() *vswitch.Counters { return &p.counters }

// Stats implements vswitch.Port.
func (p *Port) Stats() vswitch.Snapshot { return p.counters.Snapshot() }

// WaitFDs implements vswitch.Receiver: the device's rx interrupt fd, if it has
// one.
func (p *Port) WaitFDs(dst []int) []int {
	if p.rxMode == RxInterrupts {
		dst = append(dst, p.intrFD)
	}
	return dst
}

// NoDrain implements vswitch.NoDrainer: the rx interrupt fd is the
// driver's and is never read (net_tap's is the tap queue: a read would
// take a frame; see dpdk.Port.RxInterruptFD).
func (p *Port) NoDrain(fd int) bool { return p.rxMode == RxInterrupts && fd == p.intrFD }

// Arm implements vswitch.Receiver. Without rx interrupts nothing can wake the
// poller: it sleeps at most IdlePoll (see IdlePoll). With them:
//
//   - net_tap's fd is the tap queue, in the poller's epoll set since the
//     port joined it: epoll saw every frame that came, and reports it if
//     still unread. Nothing to do.
//   - Where the interrupt must be enabled (net_vhost: the frontend kicks
//     only then), a frame that came before the enable raised nothing.
//     Arm enables, then reports pending work once, so that the poller
//     polls once more before it sleeps; the second Arm, with the
//     interrupt still on, reports nothing. Polling once works for every
//     driver, where rte_eth_rx_queue_count, the other way to look, is
//     missing from many (net_tap among them) and would be a second cgo
//     call per Arm for the same answer.
//
// The first Receive that gets frames turns the interrupt off again: while
// busy the poller polls, and a net_vhost frontend's kick costs it a
// system call per burst.
func (p *Port) Arm() bool {
	if !p.rearm || p.armed {
		return false
	}
	if err := p.rx.EnableInterrupt(); err != nil && p.armWarn.CompareAndSwap(false, true) {
		p.log.WithError(err).Warn("enabling the uplink's rx interrupt failed: frames wait for the next look, every " + p.cfg.IntrIdlePoll.String())
	}
	p.armed = true
	return true
}

// IdlePoll implements vswitch.IdlePoller: IdlePoll without rx interrupts,
// IntrIdlePoll with them (a safety net: see Config).
func (p *Port) IdlePoll() time.Duration {
	if p.rxMode == RxInterrupts {
		return p.cfg.IntrIdlePoll
	}
	return p.cfg.IdlePoll
}

// AttachThread implements vswitch.ThreadAttacher: it registers the calling
// poller thread with DPDK so that the mbuf pool's per-lcore cache serves
// it. Idempotent. When DPDK has no lcore id left the thread works without
// the cache; that is logged once, not returned, so the poller goes on.
func (p *Port) AttachThread() error {
	if err := dpdk.RegisterThread(); err != nil {
		if p.attachWarn.CompareAndSwap(false, true) {
			p.log.WithError(err).Warn("poller thread not registered with DPDK: the uplink works, without the mempool cache")
		}
	}
	return nil
}

// Receive implements vswitch.Receiver: one rx burst, each frame's mbuf
// segments presented as views of mbuf memory, valid until Done.
func (p *Port) Receive(b *vswitch.Burst) int {
	n := p.rx.Receive(vswitch.BurstSize)
	if n > 0 && p.armed {
		// Traffic: the poller polls until it is idle again, then Arms.
		// A failure changes nothing that matters: a kick too many wakes
		// the poller once.
		p.rx.DisableInterrupt()
		p.armed = false
	}
	k := 0
	var tooMany uint64
	var t rxTally
	for i := 0; i < n; i++ {
		segs, l, ok := p.rx.Frame(i, b.SegPool(k))
		if !ok {
			tooMany++
			continue
		}
		f := &b.Frames[k]
		f.Segs, f.Len, f.Offload = segs, l, offload.Meta{}
		if ol, segsz := p.rx.Offload(i); ol&rxFlags != 0 {
			f.Offload = p.rxMeta(f, ol, segsz, &t)
		}
		k++
	}
	if tooMany > 0 {
		p.counters.Drops[vswitch.DropRxSegments].Add(tooMany)
	}
	t.add(&p.offc)
	b.N = k
	return k
}

// Done implements vswitch.Receiver: it frees the burst's mbufs in bulk.
func (p *Port) Done(*vswitch.Burst) { p.rx.Release() }

// Transmit implements vswitch.Port (the uplink has one tx queue, shared by
// the pollers under a lock): each frame is copied once into an
// mbuf (a chain of them for a TSO frame); the burst goes out in one tx
// burst; what the device does not take is freed and counted as
// tx_uplink_full.
func (p *Port) Transmit(_ int, frames []*vswitch.Frame) {
	var t txTally
	p.transmit(frames, &t)
	c := &p.counters
	if t.full > 0 {
		c.Drops[vswitch.DropTxFull].Add(uint64(t.full))
	}
	if t.big > 0 {
		c.Drops[vswitch.DropTxTooBig].Add(t.big)
	}
	if t.nombuf > 0 {
		c.Drops[vswitch.DropTxNoMbufs].Add(t.nombuf)
	}
	if t.refused > 0 {
		c.Drops[vswitch.DropTxOffload].Add(t.refused)
	}
	if t.tso > 0 {
		c.GSOPassed.Add(t.tso)
	}
	if t.csum > 0 {
		p.offc.txCsum.Add(t.csum)
	}
	if t.segLimit > 0 {
		p.offc.txTSOSegLimit.Add(t.segLimit)
	}
}

// txTally is a Transmit's counts.
type txTally struct {
	big, nombuf uint64
	full        int
	refused     uint64 // offload requests refused: headers changed since checked, or by the driver's tx_prepare
	tso, csum   uint64 // frames handed to the device with TSO, with a checksum to complete
	segLimit    uint64 // TSO frames beyond the device's mbufs per frame, segmented in software
}

// transmit is Transmit's part under the lock. The unlock is deferred:
// copying a frame reads the source guest's memory, which faults if that
// guest truncated it, and the poller recovers from that and goes on; the
// lock must not stay held. The TxQueue is left consistent by such a fault
// (Add commits a frame only once it is copied), and the frames added
// before it go out with the next Flush.
//
// Frames keep their order: plain ones and those the device finishes
// (offload.go) are added as they come; each run of frames that need
// software goes through p.soft, whose chunks (segments, checksummed
// copies in its buffers) are copied into mbufs before the next is made.
func (p *Port) transmit(frames []*vswitch.Frame, t *txTally) {
	p.txMu.Lock()
	defer p.txMu.Unlock()
	kind := -1 // frames[i]'s txOffload, when already known
	for i := 0; i < len(frames); i++ {
		f := frames[i]
		if f.Offload.Plain() {
			p.add(f, t)
			continue
		}
		if kind < 0 {
			kind = p.txOffload(f, t)
		}
		if kind != txSoft {
			p.addOffload(f, kind, t)
			kind = -1
			continue
		}
		j := i + 1
		for ; j < len(frames); j++ {
			if frames[j].Offload.Plain() {
				break
			}
			if kind = p.txOffload(frames[j], t); kind != txSoft {
				break
			}
		}
		if j == len(frames) || frames[j].Offload.Plain() {
			kind = -1
		}
		for run := p.soft.Begin(frames[i:j], 0); len(run) > 0; run = p.soft.Next(nil) {
			for _, s := range run {
				p.add(s, t)
			}
		}
		i = j - 1
	}
	p.flush(t)
	p.soft.Count(&p.counters)
}

// add copies a complete frame into the burst.
func (p *Port) add(f *vswitch.Frame, t *txTally) {
	if f.Len > p.maxFrame {
		t.big++
		return
	}
	if !p.tx.Add(f.Segs, f.Len) {
		// The burst is full or the stash ran dry: send what is there
		// (which refills it) and try once more.
		p.flush(t)
		if !p.tx.Add(f.Segs, f.Len) {
			t.nombuf++
		}
	}
}

// addOffload copies a frame the device is to finish (p.txMeta) into the
// burst and fixes its headers in the copy.
func (p *Port) addOffload(f *vswitch.Frame, kind int, t *txTally) {
	head := p.tx.AddOffload(f.Segs, f.Len, &p.txMeta)
	if head == nil {
		p.flush(t)
		if head = p.tx.AddOffload(f.Segs, f.Len, &p.txMeta); head == nil {
			t.nombuf++
			return
		}
	}
	// The guest may have changed its buffer since its header was
	// checked: what the device is told must hold for the copy it gets.
	n := copy(p.txLin, head[:min(len(head), hdrPeek)])
	if l, r := offload.Parse(p.txLin[:f.Len]); r != offload.ReasonOK || l != p.txLay || l.Payload > n {
		p.tx.DropLast()
		t.refused++
		return
	}
	if kind == txTSO {
		p.fixTSO(head)
		t.tso++
	} else {
		t.csum++
	}
}

// flush sends the burst built so far.
func (p *Port) flush(t *txTally) {
	added := p.tx.Pending()
	sent, bytes := p.tx.Flush()
	p.countSent(sent, bytes)
	refused := p.tx.Refused()
	t.full += added - sent - refused
	t.refused += uint64(refused)
}

func (p *Port) countSent(sent int, bytes uint64) {
	if sent > 0 {
		p.counters.TxPackets.Add(uint64(sent))
		p.counters.TxBytes.Add(bytes)
	}
}

// Status is the uplink as `vhostctl ports` shows it.
type Status struct {
	Devargs     string
	Device      string // DPDK's device name
	Driver      string
	MAC         string
	MTU         int
	Interface   string // kernel interface behind the device, if any
	Link        LinkState
	LinkChanges uint64 // up/down transitions seen since start
	// RxMode is how an idle poller learns of frames from the device.
	RxMode RxMode
	// TxOffloads and RxOffloads are the offloads the device was
	// configured with, by DPDK's names (TCP_TSO, TCP_CKSUM, TCP_LRO...).
	TxOffloads, RxOffloads []string
	// TxSegMax and TxMTUSegMax are the device's limits on mbufs per TSO
	// frame and per segment of one (nb_seg_max, nb_mtu_seg_max).
	TxSegMax, TxMTUSegMax int
	// Offloads counts the frames that took them.
	Offloads OffloadStats
}

// Status returns the uplink's state.
func (p *Port) Status() Status {
	return Status{
		Devargs: p.cfg.Devargs, Device: p.dev.Name(), Driver: p.dev.Driver(), MAC: p.mac,
		MTU: p.cfg.MTU, Interface: p.iface, Link: *p.link.Load(), LinkChanges: p.linkChanges.Load(),
		RxMode: p.rxMode, TxOffloads: dpdk.OffloadNames(p.txOff, true), RxOffloads: dpdk.OffloadNames(p.rxOff, false),
		TxSegMax: p.txSegMax, TxMTUSegMax: p.txMTUSegMax,
		Offloads: p.offc.snapshot(),
	}
}

// DeviceStats returns DPDK's counters of the device: the basic ethdev
// stats and the PMD's extended stats.
func (p *Port) DeviceStats() (dpdk.Stats, []dpdk.Xstat, error) {
	st, err := p.dev.Stats()
	if err != nil {
		return st, nil, err
	}
	xs, err := p.dev.Xstats()
	return st, xs, err
}
