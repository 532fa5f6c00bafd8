//go:build cgo

package uplink

import (
	"encoding/binary"
	"sync/atomic"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/switch/offload"
)

// Offloads on the uplink. The device is configured with the offloads of
// wantTx/wantRx that its dev_info reports (tx_offload_capa,
// rx_offload_capa); for a virtio device (net_virtio_user) that is also
// what it then negotiates with its backend. Per frame:
//
//   - Transmit: a GSO frame (TCP, without ECN) whose segments fit the MTU
//     and whose mbuf chain fits the device's limits (nb_seg_max for the
//     chain, nb_mtu_seg_max for the mbufs one segment may span: a NIC's
//     descriptors per packet) goes to a device with TCP_TSO as one mbuf
//     chain with
//     RTE_MBUF_F_TX_TCP_SEG, l2/l3/l4_len and tso_segsz; a partial
//     TCP/UDP checksum starting right after the IP header to a device with
//     TCP_CKSUM/UDP_CKSUM with RTE_MBUF_F_TX_*_CKSUM. Everything else is
//     completed in software (vswitch.SoftOffload) as before: a device with
//     checksums but without TSO gets a GSO frame's segments.
//   - Receive: RTE_MBUF_F_RX_LRO with tso_segsz becomes a GSO Meta
//     (validated as a guest's header would be), RX_L4_CKSUM_NONE (the
//     checksum field holds the pseudo header's sum, as virtio's
//     NEEDS_CSUM) a partial-checksum Meta, RX_L4_CKSUM_GOOD a DATA_VALID
//     Meta; the switch then delivers them to each guest as it negotiated
//     (or completes them in software).
//
// The L4 checksum field: virtio and Linux's CHECKSUM_PARTIAL leave the
// pseudo header's sum there, length included, also in a GSO frame (the
// super-frame's length); DPDK's TSO wants it without the length
// (rte_net_intel_cksum_prepare; DPDK's virtio driver adds the length back,
// virtio_tso_fix_cksum, and DPDK's vhost library writes it without). So
// a TSO frame's field is rewritten without the length in the mbuf copy,
// and a received LRO frame's field is rewritten with it, whatever the
// driver left. For a plain partial checksum both conventions agree and
// the field is left alone.
//
// A frame the device marks RX_L4_CKSUM_BAD or RX_IP_CKSUM_BAD is passed
// on as a plain frame and counted (rx_csum_bad): as Linux's NIC drivers
// do (CHECKSUM_NONE), the receiving stack verifies it, drops it and counts
// it where its user looks (TCP/UDP InCsumErrors).

// The offloads vhostd asks of a device that has them.
const (
	wantTx = dpdk.TxOffloadTCPTSO | dpdk.TxOffloadTCPCksum | dpdk.TxOffloadUDPCksum | dpdk.TxOffloadIPv4Cksum
	wantRx = dpdk.RxOffloadTCPLRO | dpdk.RxOffloadTCPCksum | dpdk.RxOffloadUDPCksum
)

// deviceOffloads returns the tx and rx offloads to configure a device
// with: what vhostd wants of what dev_info reports, except where the PMD
// only emulates them in software. net_tap does: its TSO is rte_gso in the
// PMD (and refuses a segment whose MSS plus headers, Ethernet included,
// exceeds the MTU: a 1448-byte MSS at MTU 1500), its checksums are
// computed in the PMD, and its rx checksum flags cost a software check of
// every frame. vhostd's own software path is as fast and counts its work.
func deviceOffloads(driver string, info dpdk.DevInfo) (tx, rx uint64) {
	tx = info.TxOffloads & (dpdk.TxOffloadMultiSeg | wantTx)
	rx = info.RxOffloads & wantRx
	if driver == "net_tap" {
		return tx &^ wantTx, 0
	}
	if tx&dpdk.TxOffloadTCPTSO == 0 {
		tx &^= dpdk.TxOffloadIPv4Cksum // only TSO frames ask for it
	}
	return tx, rx
}

// hdrPeek is how many bytes of a frame are gathered to find its headers.
const hdrPeek = 256

// maxOffloadFrame is the longest frame with an offload (as in vswitch: a
// GSO frame of 64 KiB of IP behind a VLAN-tagged Ethernet header).
const maxOffloadFrame = 18 + 40 + 65535

// hostFeatures are what a received LRO frame is validated against: every
// offload the device could have done.
const hostFeatures = offload.FeatureCsum | offload.FeatureHostTSO4 | offload.FeatureHostTSO6 | offload.FeatureHostECN

// OffloadStats counts the offloads of frames through the uplink device.
// The software path's counts are the port's gso_segmented, gso_segments
// and csum_completed; gso_passed counts the TSO frames handed to the
// device.
type OffloadStats struct {
	TxCsum uint64 `json:"tx_csum_offloaded"` // partial checksums handed to the device
	// TxTSOSegLimit: TSO frames whose mbuf chain would exceed the
	// device's nb_seg_max or nb_mtu_seg_max, segmented in software
	// instead (also counted in the port's gso_segmented).
	TxTSOSegLimit uint64 `json:"tx_tso_seg_limit"`
	RxLRO         uint64 `json:"rx_lro"`          // GSO frames (RX_LRO) received, passed as such
	RxCsumPartial uint64 `json:"rx_csum_partial"` // frames with a partial checksum (RX_L4_CKSUM_NONE)
	RxCsumGood    uint64 `json:"rx_csum_good"`    // frames the device verified (DATA_VALID)
	RxCsumBad     uint64 `json:"rx_csum_bad"`     // frames the device found bad, passed plain
	// RxOffloadInvalid: LRO or partial-checksum frames whose headers did
	// not parse, passed plain (a guest then drops them as too big or bad).
	RxOffloadInvalid uint64 `json:"rx_offload_invalid"`
}

// offloadCounters are OffloadStats as they are counted: tx under txMu,
// rx by the owning poller, each added once per burst.
type offloadCounters struct {
	txCsum, txTSOSegLimit                                         atomic.Uint64
	rxLRO, rxCsumPartial, rxCsumGood, rxCsumBad, rxOffloadInvalid atomic.Uint64
}

func (c *offloadCounters) snapshot() OffloadStats {
	return OffloadStats{
		TxCsum: c.txCsum.Load(), TxTSOSegLimit: c.txTSOSegLimit.Load(), RxLRO: c.rxLRO.Load(), RxCsumPartial: c.rxCsumPartial.Load(),
		RxCsumGood: c.rxCsumGood.Load(), RxCsumBad: c.rxCsumBad.Load(), RxOffloadInvalid: c.rxOffloadInvalid.Load(),
	}
}

// txKind is how a frame goes to the device.
const (
	txSoft = iota // completed in software first
	txTSO
	txCsum
)

// txOffload decides whether the device finishes frame f's offload and, if
// so, fills p.txMeta and p.txLay. Under txMu.
func (p *Port) txOffload(f *vswitch.Frame, t *txTally) int {
	m := &f.Offload
	if m.GSO() {
		if p.txOff&dpdk.TxOffloadTCPTSO == 0 || (m.GSOType != offload.GSOTCPv4 && m.GSOType != offload.GSOTCPv6) {
			return txSoft
		}
		l := m.Layout(f.Len)
		// Segments beyond the MTU are made in software, and dropped
		// there as tx_too_big, as for any frame.
		if l.Payload+int(m.GSOSize) > p.maxFrame || l.Payload > hdrPeek || f.Len > len(p.txLin) {
			return txSoft
		}
		// The device's descriptors per packet: the whole chain, and the
		// mbufs one segment's headers and payload may span (+1: a
		// window of MSS bytes may straddle one more mbuf boundary).
		if n := p.tx.Segs(f.Len); n > p.txSegMax || min(n, p.tx.Segs(l.Payload+int(m.GSOSize))+1) > p.txMTUSegMax {
			t.segLimit++
			return txSoft
		}
		fl := dpdk.MbufTxTCPSeg | dpdk.MbufTxTCPCksum
		if l.IPv6 {
			fl |= dpdk.MbufTxIPv6
		} else {
			fl |= dpdk.MbufTxIPv4
			if p.txOff&dpdk.TxOffloadIPv4Cksum != 0 {
				fl |= dpdk.MbufTxIPCksum
			}
		}
		p.txLay = l
		p.txMeta = dpdk.TxMeta{Flags: fl, L2: l.L3Off, L3: l.L4Off - l.L3Off, L4: l.Payload - l.L4Off, SegSize: int(m.GSOSize)}
		return txTSO
	}
	if m.Flags&offload.FlagNeedsCsum == 0 || p.txOff&(dpdk.TxOffloadTCPCksum|dpdk.TxOffloadUDPCksum) == 0 ||
		f.Len > p.maxFrame || f.Len > len(p.txLin) {
		return txSoft
	}
	frame := p.txLin[:f.Len]
	got := vswitch.Gather(frame[:min(f.Len, hdrPeek)], f.Segs)
	l, r := offload.Parse(frame)
	// The device sums from l2_len+l3_len to the end of the IP packet:
	// the guest's csum_start must be that, its field the L4 protocol's,
	// and no padding may follow (virtio sums to the end of the frame).
	if r != offload.ReasonOK || l.Payload > got || int(m.CsumStart) != l.L4Off || l.IPLenEnd != f.Len {
		return txSoft
	}
	var fl uint64
	switch {
	case l.L4Proto == 6 && m.CsumOffset == 16 && p.txOff&dpdk.TxOffloadTCPCksum != 0:
		fl = dpdk.MbufTxTCPCksum
	case l.L4Proto == 17 && m.CsumOffset == 6 && p.txOff&dpdk.TxOffloadUDPCksum != 0:
		fl = dpdk.MbufTxUDPCksum
	default:
		return txSoft
	}
	if l.IPv6 {
		fl |= dpdk.MbufTxIPv6
	} else {
		fl |= dpdk.MbufTxIPv4
	}
	p.txLay = l
	p.txMeta = dpdk.TxMeta{Flags: fl, L2: l.L3Off, L3: l.L4Off - l.L3Off, L4: l.Payload - l.L4Off}
	return txCsum
}

// fixTSO makes the copy's headers what DPDK's TSO wants: the pseudo
// header's sum without the length in the TCP checksum field, and a zero
// IPv4 checksum where the device computes it.
func (p *Port) fixTSO(head []byte) {
	offload.SetPseudoSum(head, p.txLay, false, 0)
	if p.txMeta.Flags&dpdk.MbufTxIPCksum != 0 {
		binary.BigEndian.PutUint16(head[p.txLay.L3Off+10:], 0)
	}
}

// rxTally is a receive burst's offload counts.
type rxTally struct {
	lro, partial, good, bad, invalid uint64
}

func (t *rxTally) add(c *offloadCounters) {
	if t.lro|t.partial|t.good|t.bad|t.invalid == 0 {
		return
	}
	if t.lro > 0 {
		c.rxLRO.Add(t.lro)
	}
	if t.partial > 0 {
		c.rxCsumPartial.Add(t.partial)
	}
	if t.good > 0 {
		c.rxCsumGood.Add(t.good)
	}
	if t.bad > 0 {
		c.rxCsumBad.Add(t.bad)
	}
	if t.invalid > 0 {
		c.rxOffloadInvalid.Add(t.invalid)
	}
}

// rxFlags are the mbuf flags rxMeta looks at: a frame with none of them
// is plain.
const rxFlags = dpdk.MbufRxLRO | dpdk.MbufRxL4CksumMask | dpdk.MbufRxIPCksumMask

// rxMeta returns the Meta of a received frame with mbuf flags ol (at
// least one of rxFlags) and tso_segsz segsz. It may rewrite the frame's
// L4 checksum field in the mbuf (see above). Owned by the poller.
func (p *Port) rxMeta(f *vswitch.Frame, ol uint64, segsz int, t *rxTally) offload.Meta {
	if ol&dpdk.MbufRxIPCksumMask == dpdk.MbufRxIPCksumBad {
		t.bad++
		return offload.Meta{}
	}
	l4 := ol & dpdk.MbufRxL4CksumMask
	lro := ol&dpdk.MbufRxLRO != 0 && segsz > 0
	switch {
	case lro:
		if m, ok := p.rxGSO(f, segsz); ok {
			t.lro++
			return m
		}
		t.invalid++
		return offload.Meta{}
	case l4 == dpdk.MbufRxL4CksumGood:
		t.good++
		return offload.Meta{Flags: offload.FlagDataValid}
	case l4 == dpdk.MbufRxL4CksumBad:
		t.bad++
		return offload.Meta{}
	case l4 == dpdk.MbufRxL4CksumNone:
		if m, ok := p.rxPartial(f); ok {
			t.partial++
			return m
		}
		t.invalid++
	}
	return offload.Meta{}
}

// rxHeaders gathers frame f's headers into p.rxLin and parses them; the
// headers must lie in the first segment, where fixes are written.
func (p *Port) rxHeaders(f *vswitch.Frame) (offload.Layout, []byte, bool) {
	if f.Len > len(p.rxLin) || len(f.Segs) == 0 {
		return offload.Layout{}, nil, false
	}
	frame := p.rxLin[:f.Len]
	got := vswitch.Gather(frame[:min(f.Len, hdrPeek)], f.Segs)
	l, r := offload.Parse(frame)
	if r != offload.ReasonOK || l.Payload > got || l.Payload > len(f.Segs[0]) {
		return l, nil, false
	}
	return l, frame, true
}

// rxGSO makes the Meta of an LRO frame, checked as a guest's GSO header
// would be, and writes the pseudo header's sum with the super-frame's L4
// length into its checksum field.
func (p *Port) rxGSO(f *vswitch.Frame, segsz int) (offload.Meta, bool) {
	l, frame, ok := p.rxHeaders(f)
	if !ok || l.L4Proto != 6 || segsz > 0xffff {
		return offload.Meta{}, false
	}
	h := offload.Header{Flags: offload.FlagNeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: uint16(l.Payload),
		GSOSize: uint16(segsz), CsumStart: uint16(l.L4Off), CsumOffset: 16}
	if l.IPv6 {
		h.GSOType = offload.GSOTCPv6
	}
	if offload.TCPFlagCWR(frame, l) {
		h.GSOType |= offload.GSOECN
	}
	lay, r := offload.Validate(&h, frame, hostFeatures)
	if r != offload.ReasonOK {
		return offload.Meta{}, false
	}
	offload.SetPseudoSum(f.Segs[0], lay, true, f.Len-lay.L4Off)
	return offload.MetaOf(&h, lay), true
}

// rxPartial makes the Meta of a frame with a partial checksum (the field
// holds the pseudo header's sum, as both DPDK and virtio leave it). A
// frame with padding after its IP packet is completed here instead (a
// receiver would sum the padding too) and passed as DATA_VALID.
func (p *Port) rxPartial(f *vswitch.Frame) (offload.Meta, bool) {
	l, _, ok := p.rxHeaders(f)
	if !ok || (l.L4Proto != 6 && l.L4Proto != 17) {
		return offload.Meta{}, false
	}
	off := 16
	if l.L4Proto == 17 {
		off = 6
	}
	if l.IPLenEnd != f.Len {
		b := f.Segs[0]
		if l.IPLenEnd > len(b) || !offload.CompleteChecksum(b[:l.IPLenEnd], l.L4Off, off) {
			return offload.Meta{}, false
		}
		return offload.Meta{Flags: offload.FlagDataValid}, true
	}
	return offload.Meta{Flags: offload.FlagNeedsCsum, CsumStart: uint16(l.L4Off), CsumOffset: uint16(off)}, true
}
