//go:build cgo

package dpdk

/*
#include <stdlib.h>
#include <string.h>
#include <rte_dev.h>
#include <rte_ethdev.h>

// vd_find returns how many ethdev ports devargs matches, and the first.
static int vd_find(const char *devargs, uint16_t *first)
{
	struct rte_dev_iterator it;
	uint16_t id;
	int n = 0;
	RTE_ETH_FOREACH_MATCHING_DEV(id, devargs, &it) {
		if (n == 0)
			*first = id;
		n++;
	}
	return n;
}

// vd_link reads the link without waiting (cgo cannot read bitfields).
static int vd_link(uint16_t port, uint32_t *speed, int *up, int *duplex, int *autoneg)
{
	struct rte_eth_link l;
	memset(&l, 0, sizeof(l));
	int rc = rte_eth_link_get_nowait(port, &l);
	*speed = l.link_speed;
	*up = l.link_status;
	*duplex = l.link_duplex;
	*autoneg = l.link_autoneg;
	return rc;
}

// vd_configure configures one queue pair; rxq_intr asks for rx queue
// interrupts (intr_conf.rxq, a bitfield cgo cannot set).
static int vd_configure(uint16_t port, uint32_t mtu, uint64_t rxoff, uint64_t txoff, int rxq_intr)
{
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof(conf));
	conf.rxmode.mtu = mtu;
	conf.rxmode.offloads = rxoff;
	conf.txmode.offloads = txoff;
	conf.intr_conf.rxq = rxq_intr != 0;
	return rte_eth_dev_configure(port, 1, 1, &conf);
}

static int vd_rxq_setup(uint16_t port, uint16_t nb, struct rte_mempool *mp, uint64_t offloads)
{
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	struct rte_eth_rxconf conf = info.default_rxconf;
	conf.offloads = offloads;
	return rte_eth_rx_queue_setup(port, 0, nb, rte_eth_dev_socket_id(port), &conf, mp);
}

static int vd_txq_setup(uint16_t port, uint16_t nb, uint64_t offloads)
{
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	struct rte_eth_txconf conf = info.default_txconf;
	conf.offloads = offloads;
	return rte_eth_tx_queue_setup(port, 0, nb, rte_eth_dev_socket_id(port), &conf);
}
*/
import "C"

import (
	"fmt"
	"net"
	"sync"
	"unsafe"
)

// Offload bits vhostd may ask for.
const (
	RxOffloadScatter  = uint64(C.RTE_ETH_RX_OFFLOAD_SCATTER)
	TxOffloadMultiSeg = uint64(C.RTE_ETH_TX_OFFLOAD_MULTI_SEGS)
)

// OffloadNames returns DPDK's names of the rx (tx false) or tx offload
// bits set in bits, lowest first ("TCP_TSO", "TCP_CKSUM", ...).
func OffloadNames(bits uint64, tx bool) []string {
	var names []string
	for b := uint64(1); b != 0; b <<= 1 {
		if bits&b == 0 {
			continue
		}
		if tx {
			names = append(names, C.GoString(C.rte_eth_dev_tx_offload_name(C.uint64_t(b))))
		} else {
			names = append(names, C.GoString(C.rte_eth_dev_rx_offload_name(C.uint64_t(b))))
		}
	}
	return names
}

// Port is one ethdev port, from Probe until Close.
type Port struct {
	e       *EAL
	id      C.uint16_t
	dev     *C.struct_rte_device
	devargs string
	name    string
	driver  string

	mu      sync.RWMutex // guards closed against reads (link, stats) during Close
	closed  bool
	started bool
	conf    PortConfig // the last configuration that took

	xmu    sync.Mutex // serialises Xstats, which caches xnames
	xnames []string   // xstats names, read once
}

// Probe attaches the device devargs names (rte_dev_probe: a vdev such as
// "net_tap0,iface=vd0", or a PCI address) and returns its ethdev port. It
// fails unless devargs yields exactly one ethdev port.
func (e *EAL) Probe(devargs string) (*Port, error) {
	p := &Port{e: e, devargs: devargs}
	err := e.do(func() error {
		mark := complaintMark()
		cargs := C.CString(devargs)
		defer C.free(unsafe.Pointer(cargs))
		op := fmt.Sprintf("probe DPDK device %q", devargs)
		if rc := C.rte_dev_probe(cargs); rc < 0 && rc != -C.EEXIST {
			err := newError(op, int(rc), mark)
			err.Hint = probeHint(devargs)
			return err
		}
		var id C.uint16_t
		switch n := C.vd_find(cargs, &id); {
		case n == 0:
			return &Error{Op: op, Msg: "the device has no ethernet port", Log: complaintsSince(mark),
				Hint: "give the devargs of a network device"}
		case n > 1:
			return &Error{Op: op, Msg: fmt.Sprintf("it matches %d ethernet ports", n),
				Hint: "name a single port in the devargs"}
		}
		p.id = id
		var info C.struct_rte_eth_dev_info
		if rc := C.rte_eth_dev_info_get(id, &info); rc != 0 {
			return newError(op+": device info", int(rc), mark)
		}
		p.dev = info.device
		p.driver = C.GoString(info.driver_name)
		var name [C.RTE_ETH_NAME_MAX_LEN]C.char
		if C.rte_eth_dev_get_name_by_port(id, &name[0]) == 0 {
			p.name = C.GoString(&name[0])
		}
		return nil
	})
	if err != nil {
		if p.dev != nil {
			p.Close()
		}
		return nil, err
	}
	return p, nil
}

// probeHint says what to try when devargs probed nothing.
func probeHint(devargs string) string {
	if IsPCI(devargs) {
		return "is the NIC bound to vfio-pci (dpdk-devbind.py --status) and vfio loaded?"
	}
	return "use DPDK devargs such as net_tap0,iface=NAME (a new tap interface), net_af_packet0,iface=IFACE (an existing interface), or a PCI address of a NIC bound to vfio-pci"
}

// ID returns the ethdev port id.
func (p *Port) ID() int { return int(p.id) }

// Name returns DPDK's device name (e.g. "net_tap0").
func (p *Port) Name() string { return p.name }

// Driver returns the PMD's name (e.g. "net_tap").
func (p *Port) Driver() string { return p.driver }

// Devargs returns the string the port was probed with.
func (p *Port) Devargs() string { return p.devargs }

// DevInfo is what a device says it can do (rte_eth_dev_info).
type DevInfo struct {
	Driver         string
	MinMTU, MaxMTU int
	// MaxRxPktLen is the largest frame the PMD says it receives; ethdev
	// refuses an MTU whose frame would exceed it.
	MaxRxPktLen          uint32
	MaxRxQueues          int
	MaxTxQueues          int
	RxDescMin, RxDescMax int
	TxDescMin, TxDescMax int
	// TxSegMax is the most mbufs one frame may span (tx_desc_lim.nb_seg_max:
	// a TSO frame's whole chain), TxMTUSegMax the most for a frame of up
	// to the MTU (nb_mtu_seg_max). ethdev fills in 65535 where the PMD
	// sets no limit.
	TxSegMax, TxMTUSegMax  int
	RxOffloads, TxOffloads uint64
	// IfIndex is the kernel interface behind the device (net_tap,
	// net_af_packet), or 0.
	IfIndex int
}

// Info returns the device's capabilities.
func (p *Port) Info() (DevInfo, error) {
	var d DevInfo
	err := p.e.do(func() error {
		var info C.struct_rte_eth_dev_info
		if rc := C.rte_eth_dev_info_get(p.id, &info); rc != 0 {
			return newError("device info of "+p.name, int(rc), noMark)
		}
		d = DevInfo{
			Driver: C.GoString(info.driver_name), MinMTU: int(info.min_mtu), MaxMTU: int(info.max_mtu),
			MaxRxPktLen: uint32(info.max_rx_pktlen),
			MaxRxQueues: int(info.max_rx_queues), MaxTxQueues: int(info.max_tx_queues),
			RxDescMin: int(info.rx_desc_lim.nb_min), RxDescMax: int(info.rx_desc_lim.nb_max),
			TxDescMin: int(info.tx_desc_lim.nb_min), TxDescMax: int(info.tx_desc_lim.nb_max),
			TxSegMax: int(info.tx_desc_lim.nb_seg_max), TxMTUSegMax: int(info.tx_desc_lim.nb_mtu_seg_max),
			RxOffloads: uint64(info.rx_offload_capa), TxOffloads: uint64(info.tx_offload_capa),
			IfIndex: int(info.if_index),
		}
		return nil
	})
	return d, err
}

// PortConfig sets up a port with one receive and one transmit queue.
type PortConfig struct {
	MTU        int      // rxmode.mtu; 0 lets DPDK pick (1500)
	RxDesc     int      // receive ring size (adjusted to the device's limits)
	TxDesc     int      // transmit ring size (adjusted likewise)
	Pool       *Mempool // the receive queue's mbufs
	RxOffloads uint64
	TxOffloads uint64
	// RxInterrupts asks for receive queue interrupts (intr_conf.rxq).
	// ethdev accepts it for every driver; one that has none simply gives
	// no fd afterwards (see RxInterruptFD).
	RxInterrupts bool
}

// Configure configures the port (rte_eth_dev_configure) and sets up receive
// and transmit queue 0.
func (p *Port) Configure(c PortConfig) error {
	return p.e.do(func() error {
		mark := complaintMark()
		intr := C.int(0)
		if c.RxInterrupts {
			intr = 1
		}
		if rc := C.vd_configure(p.id, C.uint32_t(c.MTU), C.uint64_t(c.RxOffloads), C.uint64_t(c.TxOffloads), intr); rc != 0 {
			return newError(fmt.Sprintf("configure %s (mtu %d, rx interrupts %v)", p.name, c.MTU, c.RxInterrupts), int(rc), mark)
		}
		rxd, txd := C.uint16_t(c.RxDesc), C.uint16_t(c.TxDesc)
		if rc := C.rte_eth_dev_adjust_nb_rx_tx_desc(p.id, &rxd, &txd); rc != 0 {
			return newError("adjust ring sizes of "+p.name, int(rc), mark)
		}
		if rc := C.vd_rxq_setup(p.id, rxd, c.Pool.mp, C.uint64_t(c.RxOffloads)); rc != 0 {
			e := newError(fmt.Sprintf("set up receive queue of %s (%d descriptors)", p.name, rxd), int(rc), mark)
			e.Hint = "the mbuf pool may be too small: give DPDK more memory (--eal '-m MB')"
			return e
		}
		if rc := C.vd_txq_setup(p.id, txd, C.uint64_t(c.TxOffloads)); rc != 0 {
			return newError(fmt.Sprintf("set up transmit queue of %s (%d descriptors)", p.name, txd), int(rc), mark)
		}
		p.conf = c
		return nil
	})
}

// SetMTU sets the port's MTU (rte_eth_dev_set_mtu).
func (p *Port) SetMTU(mtu int) error {
	return p.e.do(func() error {
		mark := complaintMark()
		if rc := C.rte_eth_dev_set_mtu(p.id, C.uint16_t(mtu)); rc != 0 {
			return newError(fmt.Sprintf("set MTU of %s to %d", p.name, mtu), int(rc), mark)
		}
		return nil
	})
}

// MTU returns the port's MTU as DPDK knows it.
func (p *Port) MTU() (int, error) {
	var mtu C.uint16_t
	err := p.e.do(func() error {
		if rc := C.rte_eth_dev_get_mtu(p.id, &mtu); rc != 0 {
			return newError("get MTU of "+p.name, int(rc), noMark)
		}
		return nil
	})
	return int(mtu), err
}

// SetPromiscuous turns promiscuous mode on (so the port receives frames
// for every MAC behind it) or off. Devices that cannot do it report
// ENOTSUP.
func (p *Port) SetPromiscuous(on bool) error {
	return p.e.do(func() error {
		if on {
			if rc := C.rte_eth_promiscuous_enable(p.id); rc != 0 {
				return newError("enable promiscuous mode on "+p.name, int(rc), noMark)
			}
		} else if rc := C.rte_eth_promiscuous_disable(p.id); rc != 0 {
			return newError("disable promiscuous mode on "+p.name, int(rc), noMark)
		}
		return nil
	})
}

// Start starts the port (rte_eth_dev_start).
func (p *Port) Start() error {
	return p.e.do(func() error {
		mark := complaintMark()
		if rc := C.rte_eth_dev_start(p.id); rc != 0 {
			return newError("start "+p.name, int(rc), mark)
		}
		p.started = true
		return nil
	})
}

// Stop stops the port (rte_eth_dev_stop); a stopped port neither receives
// nor transmits.
func (p *Port) Stop() error {
	return p.e.do(func() error {
		if !p.started {
			return nil
		}
		p.started = false
		mark := complaintMark()
		if rc := C.rte_eth_dev_stop(p.id); rc != 0 {
			return newError("stop "+p.name, int(rc), mark)
		}
		return nil
	})
}

// Close stops the port if needed, closes it (rte_eth_dev_close) and
// detaches its device (rte_dev_remove; for net_tap this deletes the tap
// interface). The port must not be used afterwards.
func (p *Port) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	stopErr := p.Stop()
	err := p.e.do(func() error {
		mark := complaintMark()
		if p.driver == "net_virtio_user" && p.conf.RxInterrupts {
			// DPDK 22.11 closes net_virtio_user's receive interrupt fd
			// twice in rte_eth_dev_close: virtio_dev_close calls
			// rte_intr_efd_disable when intr_conf.rxq (or .lsc, which
			// vd_configure never sets) is on, and that closes the
			// interrupt handle's event fds, which virtio_user set to its
			// queues' call eventfds; virtio_user then closes those again
			// when it releases its queues. Whatever fd another goroutine
			// opened in between under the same number (a guest's
			// eventfd, a poller's epoll) would be closed under it.
			// Configured again without receive interrupts (the port is
			// stopped: virtio_dev_configure renegotiates nothing when the
			// offloads are unchanged), the port skips that step and
			// virtio_user's close is the only one; what the skipped step
			// would also have done is disable the interrupt (nothing to
			// do for a vdev) and free the queues' interrupt vector list,
			// a few bytes left allocated per close. Should the configure
			// fail, the close goes on as before.
			c := p.conf
			C.vd_configure(p.id, C.uint32_t(c.MTU), C.uint64_t(c.RxOffloads), C.uint64_t(c.TxOffloads), 0)
		}
		if rc := C.rte_eth_dev_close(p.id); rc != 0 {
			return newError("close "+p.name, int(rc), mark)
		}
		// Closing released the ethdev; a vdev's device stays until removed.
		if p.dev != nil {
			if rc := C.rte_dev_remove(p.dev); rc != 0 && rc != -C.ENOENT {
				return newError("detach "+p.name, int(rc), mark)
			}
		}
		return nil
	})
	if err == nil {
		err = stopErr
	}
	return err
}

// MAC returns the port's MAC address.
func (p *Port) MAC() (net.HardwareAddr, error) {
	var a C.struct_rte_ether_addr
	if err := p.e.do(func() error {
		if rc := C.rte_eth_macaddr_get(p.id, &a); rc != 0 {
			return newError("MAC address of "+p.name, int(rc), noMark)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	mac := make(net.HardwareAddr, 6)
	for i := range mac {
		mac[i] = byte(a.addr_bytes[i])
	}
	return mac, nil
}

// Link is a port's link state.
type Link struct {
	Up         bool
	SpeedMbps  uint32 // 0 when unknown
	FullDuplex bool
	Autoneg    bool
}

func (l Link) String() string {
	if !l.Up {
		return "down"
	}
	d := "half-duplex"
	if l.FullDuplex {
		d = "full-duplex"
	}
	return fmt.Sprintf("up %d Mbps %s", l.SpeedMbps, d)
}

// Link reads the link state without waiting (rte_eth_link_get_nowait). It
// may be called from any goroutine.
func (p *Port) Link() (Link, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return Link{}, ErrClosed
	}
	var speed C.uint32_t
	var up, duplex, autoneg C.int
	if rc := C.vd_link(p.id, &speed, &up, &duplex, &autoneg); rc != 0 {
		return Link{}, newError("link status of "+p.name, int(rc), noMark)
	}
	return Link{Up: up != 0, SpeedMbps: uint32(speed), FullDuplex: duplex != 0, Autoneg: autoneg != 0}, nil
}

// Stats are a port's basic ethdev counters (rte_eth_stats).
type Stats struct {
	RxPackets uint64 `json:"ipackets"`
	TxPackets uint64 `json:"opackets"`
	RxBytes   uint64 `json:"ibytes"`
	TxBytes   uint64 `json:"obytes"`
	RxMissed  uint64 `json:"imissed"`   // dropped by the device: receive ring full
	RxErrors  uint64 `json:"ierrors"`   // erroneous frames received
	TxErrors  uint64 `json:"oerrors"`   // frames the device failed to send
	RxNoMbuf  uint64 `json:"rx_nombuf"` // receive mbuf allocation failures
}

// Stats reads the basic counters. It may be called from any goroutine.
func (p *Port) Stats() (Stats, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return Stats{}, ErrClosed
	}
	var s C.struct_rte_eth_stats
	if rc := C.rte_eth_stats_get(p.id, &s); rc != 0 {
		return Stats{}, newError("stats of "+p.name, int(rc), noMark)
	}
	return Stats{
		RxPackets: uint64(s.ipackets), TxPackets: uint64(s.opackets),
		RxBytes: uint64(s.ibytes), TxBytes: uint64(s.obytes),
		RxMissed: uint64(s.imissed), RxErrors: uint64(s.ierrors),
		TxErrors: uint64(s.oerrors), RxNoMbuf: uint64(s.rx_nombuf),
	}, nil
}

// Xstat is one extended statistic.
type Xstat struct {
	Name  string
	Value uint64
}

// Xstats reads the PMD's extended counters (rte_eth_xstats_get). It may be
// called from any goroutine.
func (p *Port) Xstats() ([]Xstat, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	p.xmu.Lock()
	defer p.xmu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if p.xnames == nil {
		n := C.rte_eth_xstats_get_names(p.id, nil, 0)
		if n < 0 {
			return nil, newError("xstats names of "+p.name, int(n), noMark)
		}
		names := make([]C.struct_rte_eth_xstat_name, n)
		if n > 0 {
			if got := C.rte_eth_xstats_get_names(p.id, &names[0], C.uint(n)); got != n {
				return nil, &Error{Op: "xstats names of " + p.name, Msg: fmt.Sprintf("count changed from %d to %d", n, got)}
			}
		}
		p.xnames = make([]string, n)
		for i := range names {
			p.xnames[i] = C.GoString(&names[i].name[0])
		}
	}
	if len(p.xnames) == 0 {
		return nil, nil
	}
	vals := make([]C.struct_rte_eth_xstat, len(p.xnames))
	n := C.rte_eth_xstats_get(p.id, &vals[0], C.uint(len(vals)))
	if n < 0 {
		return nil, newError("xstats of "+p.name, int(n), noMark)
	}
	out := make([]Xstat, 0, n)
	for _, v := range vals[:min(int(n), len(vals))] {
		if int(v.id) < len(p.xnames) {
			out = append(out, Xstat{Name: p.xnames[v.id], Value: uint64(v.value)})
		}
	}
	return out, nil
}
