//go:build cgo

package uplink

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/switch/offload"
)

// Offloads between the uplink and a real virtio peer, both DPDK drivers
// in this process: DPDK 22.11's net_vhost reports no TCP_TSO in
// tx_offload_capa (its vhost library would write GSO headers whatever the
// frontend negotiated), so the TSO transmit path is tested with the
// uplink on net_virtio_user and the peer on net_vhost with tso=1 (which
// offers HOST_TSO4/6: the uplink's dev_info then reports TCP_TSO); the
// receive path with the uplink on net_vhost,tso=1 and a net_virtio_user
// peer sending TSO frames.

// peer is a DPDK device on the other end of a virtio link.
type peer struct {
	dev  *dpdk.Port
	pool *dpdk.Mempool
	rx   *dpdk.RxQueue
}

func newPeer(t testing.TB, devargs string, pc dpdk.PortConfig) *peer {
	t.Helper()
	pool, err := testEAL.NewPktmbufPool(4095, 64, 2048+dpdk.Headroom)
	if err != nil {
		t.Fatal(err)
	}
	d, err := testEAL.Probe(devargs)
	if err != nil {
		pool.Free()
		t.Fatal(err)
	}
	p := &peer{dev: d, pool: pool}
	t.Cleanup(func() {
		if p.rx != nil {
			p.rx.Close()
		}
		d.Close()
		pool.Free()
	})
	pc.RxDesc, pc.TxDesc, pc.Pool = 256, 256, pool
	if err := d.Configure(pc); err != nil {
		t.Fatalf("%s: %v", devargs, err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	p.rx = d.NewRxQueue()
	return p
}

// receive polls the peer until it got want frames (or 2s passed) and
// returns each frame's bytes, mbuf flags and tso_segsz.
func (p *peer) receive(t *testing.T, want int) (frames [][]byte, ol []uint64, segsz []int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for len(frames) < want && time.Now().Before(deadline) {
		n := p.rx.Receive(32)
		for i := 0; i < n; i++ {
			segs, _, ok := p.rx.Frame(i, nil)
			if !ok {
				t.Fatalf("peer frame %d: too many segments", i)
			}
			o, s := p.rx.Offload(i)
			frames, ol, segsz = append(frames, bytes.Join(segs, nil)), append(ol, o), append(segsz, s)
		}
		p.rx.Release()
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return frames, ol, segsz
}

func waitUp(t testing.TB, d *dpdk.Port) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if l, _ := d.Link(); l.Up {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("the virtio link never came up")
}

// withMeta sets f's Offload from header h as the VM port would.
func withMeta(t testing.TB, f *vswitch.Frame, b []byte, h offload.Header) *vswitch.Frame {
	t.Helper()
	lay, r := offload.Validate(&h, b, offload.FeatureCsum|offload.FeatureHostTSO4|offload.FeatureHostTSO6)
	if r != offload.ReasonOK {
		t.Fatalf("validate: %v", r)
	}
	f.Offload = offload.MetaOf(&h, lay)
	return f
}

var (
	tsoHdr  = offload.Header{Flags: offload.FlagNeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	csumHdr = offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
	// The same for TCP/IPv6 (tcp6 frames: 40-byte IPv6 header).
	tso6Hdr  = offload.Header{Flags: offload.FlagNeedsCsum, GSOType: offload.GSOTCPv6, HdrLen: 74, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}
	csum6Hdr = offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 54, CsumOffset: 16}
)

// virtioUplink opens an uplink on net_virtio_user whose backend is a
// net_vhost peer with the given tso devarg.
func virtioUplink(t *testing.T, tso int) (*Port, *peer) { return virtioUplinkB(t, tso) }

func virtioUplinkB(t testing.TB, tso int) (*Port, *peer) {
	t.Helper()
	sock := fmt.Sprintf("%s/peer.sock", t.TempDir())
	pr := newPeer(t, fmt.Sprintf("net_vhost%d,iface=%s,tso=%d", ringSeq.Add(1), sock, tso),
		dpdk.PortConfig{RxOffloads: dpdk.RxOffloadTCPCksum | dpdk.RxOffloadUDPCksum})
	up := openUplink(t, Config{Devargs: fmt.Sprintf("net_virtio_user%d,path=%s,queue_size=256,mac=02:00:00:00:00:0e", ringSeq.Add(1), sock)})
	waitUp(t, pr.dev)
	if err := up.AttachThread(); err != nil {
		t.Fatal(err)
	}
	return up, pr
}

// TestUplinkTSOToVirtioPeer: a guest's GSO super-frame leaves an uplink
// whose device has TCP_TSO as ONE frame with the TSO request, and the
// virtio peer receives it whole (RX_LRO, tso_segsz = gso_size) with the
// guest's bytes; a partial checksum goes to the device too.
func TestUplinkTSOToVirtioPeer(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := virtioUplink(t, 1)
	st := up.Status()
	t.Logf("uplink %s: tx offloads %v, rx offloads %v", st.Driver, st.TxOffloads, st.RxOffloads)
	if !slices.Contains(st.TxOffloads, "TCP_TSO") || !slices.Contains(st.TxOffloads, "TCP_CKSUM") {
		t.Fatalf("tx offloads %v: want TCP_TSO and TCP_CKSUM (the backend offers HOST_TSO4/6 and CSUM)", st.TxOffloads)
	}
	super := tcp4(40*1448 + 7) // 58 KiB of payload
	csum := tcp4(900)
	frames := []*vswitch.Frame{withMeta(t, split(super), super, tsoHdr), withMeta(t, split(csum), csum, csumHdr)}
	p := up
	p.Transmit(0, frames)
	got, ol, segsz := pr.receive(t, 2)
	if len(got) != 2 {
		t.Fatalf("peer received %d frames, want 2 (the super-frame whole, the checksum frame); stats %+v", len(got), p.Stats())
	}
	if !bytes.Equal(got[0], super) {
		t.Errorf("super-frame: peer got %d bytes, want the guest's %d, differing at %v", len(got[0]), len(super), diff(got[0], super))
	}
	if ol[0]&dpdk.MbufRxLRO == 0 || segsz[0] != 1448 || ol[0]&dpdk.MbufRxL4CksumMask != dpdk.MbufRxL4CksumNone {
		t.Errorf("super-frame at the peer: ol_flags %#x tso_segsz %d, want RX_LRO, L4_CKSUM_NONE, 1448", ol[0], segsz[0])
	}
	if !bytes.Equal(got[1], csum) || ol[1]&dpdk.MbufRxL4CksumMask != dpdk.MbufRxL4CksumNone {
		t.Errorf("checksum frame at the peer: equal %v, ol_flags %#x, want the guest's bytes with L4_CKSUM_NONE", bytes.Equal(got[1], csum), ol[1])
	}
	s := p.Stats()
	os := p.Status().Offloads
	if s.GSOPassed != 1 || s.GSOSegmented != 0 || s.CsumCompleted != 0 || os.TxCsum != 1 || s.TxPackets != 2 {
		t.Errorf("stats %+v, offloads %+v: want 1 GSO frame and 1 checksum handed to the device", s, os)
	}
	// Zero allocations on the TSO path, through the device and back out
	// of the peer.
	if allocs := testing.AllocsPerRun(20, func() {
		p.Transmit(0, frames)
		for n := 0; n < 2; {
			n += pr.rx.Receive(32)
			pr.rx.Release()
		}
	}); allocs != 0 {
		t.Errorf("%.1f allocations per TSO transmit", allocs)
	}
}

// TestUplinkTSO6ToVirtioPeer: as TestUplinkTSOToVirtioPeer for TCP over
// IPv6: the super-frame goes to the device with TX_TCP_SEG and TX_IPV6
// and reaches the peer as one LRO frame (GSO TCPV6 in the virtio header,
// which the peer's vhost library turns into RX_LRO with tso_segsz),
// byte-identical to the guest's; a TCP/IPv6 partial checksum goes to the
// device as well and arrives untouched with L4_CKSUM_NONE.
func TestUplinkTSO6ToVirtioPeer(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := virtioUplink(t, 1)
	if st := up.Status(); !slices.Contains(st.TxOffloads, "TCP_TSO") || !slices.Contains(st.TxOffloads, "TCP_CKSUM") {
		t.Fatalf("tx offloads %v: want TCP_TSO and TCP_CKSUM", st.TxOffloads)
	}
	super := tcp6(40*1428 + 9) // 56 KiB of payload
	csum := tcp6(1000)
	frames := []*vswitch.Frame{withMeta(t, split(super), super, tso6Hdr), withMeta(t, split(csum), csum, csum6Hdr)}
	up.Transmit(0, frames)
	got, ol, segsz := pr.receive(t, 2)
	if len(got) != 2 {
		t.Fatalf("peer received %d frames, want 2 (the IPv6 super-frame whole, the checksum frame); stats %+v", len(got), up.Stats())
	}
	if !bytes.Equal(got[0], super) {
		t.Errorf("IPv6 super-frame: peer got %d bytes, want the guest's %d, differing at %v", len(got[0]), len(super), diff(got[0], super))
	}
	if ol[0]&dpdk.MbufRxLRO == 0 || segsz[0] != 1428 || ol[0]&dpdk.MbufRxL4CksumMask != dpdk.MbufRxL4CksumNone {
		t.Errorf("IPv6 super-frame at the peer: ol_flags %#x tso_segsz %d, want RX_LRO, L4_CKSUM_NONE, 1428", ol[0], segsz[0])
	}
	if !bytes.Equal(got[1], csum) || ol[1]&dpdk.MbufRxL4CksumMask != dpdk.MbufRxL4CksumNone || ol[1]&dpdk.MbufRxLRO != 0 {
		t.Errorf("IPv6 checksum frame at the peer: equal %v (%v), ol_flags %#x, want the guest's bytes with L4_CKSUM_NONE",
			bytes.Equal(got[1], csum), diff(got[1], csum), ol[1])
	}
	s, os := up.Stats(), up.Status().Offloads
	if s.GSOPassed != 1 || s.GSOSegmented != 0 || s.CsumCompleted != 0 || os.TxCsum != 1 || s.TxPackets != 2 {
		t.Errorf("stats %+v, offloads %+v: want 1 GSO frame and 1 checksum handed to the device", s, os)
	}
	// The peer's view, as the virtio header it got: GSO TCPV6 with the
	// guest's MSS. rxGSO is what turns RX_LRO back into a header; run the
	// peer's frame through it on the uplink (the same code a received
	// frame takes) and compare with the guest's header.
	f := &vswitch.Frame{Segs: [][]byte{got[0]}, Len: len(got[0])}
	m, ok := up.rxGSO(f, segsz[0])
	if !ok {
		t.Fatal("the peer's LRO frame does not make a GSO Meta")
	}
	if m != frames[0].Offload || !m.IPv6 || m.GSOType != offload.GSOTCPv6 {
		t.Errorf("the peer's LRO frame as a Meta: %+v, want the guest's %+v (GSO TCPV6)", m, frames[0].Offload)
	}
	if !bytes.Equal(got[0], super) {
		t.Errorf("the peer's LRO frame after rxGSO's checksum field fix differs from the guest's at %v", diff(got[0], super))
	}
}

// TestUplinkTSOSegLimit: a TSO frame whose mbuf chain would exceed the
// device's nb_seg_max (a NIC's descriptors per packet; forced down here,
// net_virtio_user has no such limit) is segmented in software and counted
// as tx_tso_seg_limit; the peer gets valid MSS-sized segments. A frame
// within the limit still goes to the device whole.
func TestUplinkTSOSegLimit(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := virtioUplink(t, 1)
	st := up.Status()
	t.Logf("device limits read: nb_seg_max %d, nb_mtu_seg_max %d; mbuf room %d", st.TxSegMax, st.TxMTUSegMax, up.pool.Room())
	if st.TxSegMax <= 0 || st.TxMTUSegMax <= 0 || !slices.Contains(st.TxOffloads, "TCP_TSO") {
		t.Fatalf("status %+v: want the device's limits and TCP_TSO", st)
	}
	const limit = 8
	up.txMu.Lock()
	up.txSegMax = limit
	up.txMu.Unlock()
	big := tcp4(30*1448 + 11) // about 22 mbufs
	small := tcp4(5 * 1448)   // 4 mbufs
	if n := up.tx.Segs(len(big)); n <= limit {
		t.Fatalf("the big frame takes %d mbufs, not more than %d", n, limit)
	}
	if n := up.tx.Segs(len(small)); n > limit {
		t.Fatalf("the small frame takes %d mbufs, more than %d", n, limit)
	}
	up.Transmit(0, []*vswitch.Frame{withMeta(t, split(big), big, tsoHdr), withMeta(t, split(small), small, tsoHdr)})
	got, ol, _ := pr.receive(t, 32)
	if len(got) != 32 {
		t.Fatalf("peer received %d frames, want 31 segments and the small frame whole; stats %+v %+v", len(got), up.Stats(), up.Status().Offloads)
	}
	checkTCP4Segments(t, got[:31], ol, big)
	if !bytes.Equal(got[31], small) || ol[31]&dpdk.MbufRxLRO == 0 {
		t.Errorf("the small frame did not arrive whole as an LRO frame (ol_flags %#x)", ol[31])
	}
	s, os := up.Stats(), up.Status().Offloads
	if os.TxTSOSegLimit != 1 || s.GSOSegmented != 1 || s.GSOSegments != 31 || s.GSOPassed != 1 {
		t.Errorf("stats %+v, offloads %+v: want 1 frame over the limit segmented (31 segments), 1 passed", s, os)
	}
	// nb_mtu_seg_max: a device that takes one mbuf per segment gets no
	// chain whose MSS-sized windows may straddle two.
	up.txMu.Lock()
	up.txSegMax, up.txMTUSegMax = 65535, 1
	up.txMu.Unlock()
	up.Transmit(0, []*vswitch.Frame{withMeta(t, split(small), small, tsoHdr)})
	if got, ol, _ = pr.receive(t, 5); len(got) != 5 || ol[0]&dpdk.MbufRxLRO != 0 {
		t.Errorf("nb_mtu_seg_max 1: peer got %d frames, want the small frame's 5 segments", len(got))
	}
	if os := up.Status().Offloads; os.TxTSOSegLimit != 2 || up.Stats().GSOPassed != 1 {
		t.Errorf("nb_mtu_seg_max 1: offloads %+v, stats %+v", os, up.Stats())
	}
}

// TestUplinkUSOSegmentsInSoftware: no DPDK 22.11 virtio device offers
// UDP segmentation (net_virtio_user's tx_offload_capa has TCP_TSO at
// most, net_vhost's only checksums), so a guest's USO super-frame
// (GSO_UDP_L4) takes the software path even to a device with TCP_TSO:
// the peer gets MSS-sized datagrams, each with its own UDP length and a
// valid checksum, carrying the super-frame's payload in order.
func TestUplinkUSOSegmentsInSoftware(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := virtioUplink(t, 1)
	if st := up.Status(); !slices.Contains(st.TxOffloads, "TCP_TSO") || slices.Contains(st.TxOffloads, "UDP_TSO") {
		t.Fatalf("tx offloads %v: want TCP_TSO without UDP_TSO", st.TxOffloads)
	}
	const mss = 1400
	super := udp4(5*mss + 123)
	h := offload.Header{Flags: offload.FlagNeedsCsum, GSOType: offload.GSOUDPL4, HdrLen: 42, GSOSize: mss, CsumStart: 34, CsumOffset: 6}
	lay, r := offload.Validate(&h, super, offload.FeatureCsum|offload.FeatureHostUSO)
	if r != offload.ReasonOK {
		t.Fatalf("validate: %v", r)
	}
	f := split(super)
	f.Offload = offload.MetaOf(&h, lay)
	up.Transmit(0, []*vswitch.Frame{f})
	got, ol, _ := pr.receive(t, 6)
	if len(got) != 6 {
		t.Fatalf("peer received %d frames, want 6 datagrams; stats %+v", len(got), up.Stats())
	}
	var data []byte
	for i, g := range got {
		ip, udp := g[14:34], g[34:]
		if len(udp) > 8+mss || ol[i]&dpdk.MbufRxLRO != 0 || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
			t.Fatalf("datagram %d: %d bytes, UDP length %d, ol_flags %#x", i, len(g), binary.BigEndian.Uint16(udp[4:]), ol[i])
		}
		if fold(sum16(0, ip)) != 0xffff || fold(sum16(sum16(17+uint32(len(udp)), ip[12:20]), udp)) != 0xffff {
			t.Errorf("datagram %d: bad checksum", i)
		}
		data = append(data, udp[8:]...)
	}
	if !bytes.Equal(data, super[42:]) {
		t.Error("the datagrams' payload differs from the super-frame's")
	}
	if s := up.Stats(); s.GSOPassed != 0 || s.GSOSegmented != 1 || s.GSOSegments != 6 {
		t.Errorf("stats %+v: want the USO frame segmented in software", s)
	}
}

// TestUplinkNoTSOSegments: with tso=0 the backend offers no HOST_TSO: the
// uplink's device has checksums but no TCP_TSO, and a GSO frame is cut
// into MTU-sized segments in software, each checksummed.
func TestUplinkNoTSOSegments(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := virtioUplink(t, 0)
	st := up.Status()
	if slices.Contains(st.TxOffloads, "TCP_TSO") || !slices.Contains(st.TxOffloads, "TCP_CKSUM") {
		t.Fatalf("tx offloads %v: want TCP_CKSUM without TCP_TSO", st.TxOffloads)
	}
	super := tcp4(3*1448 + 5)
	up.Transmit(0, []*vswitch.Frame{withMeta(t, split(super), super, tsoHdr)})
	got, ol, _ := pr.receive(t, 4)
	if len(got) != 4 {
		t.Fatalf("peer received %d frames, want 4 segments; stats %+v", len(got), up.Stats())
	}
	checkTCP4Segments(t, got, ol, super)
	if s := up.Stats(); s.GSOPassed != 0 || s.GSOSegmented != 1 || s.GSOSegments != 4 {
		t.Errorf("stats %+v: want the frame segmented in software", s)
	}
}

// TestUplinkReceivesTSOFromVirtioPeer: a frontend sending TSO frames into
// a net_vhost,tso=1 uplink yields a GSO Meta (what a GUEST_TSO guest gets
// as its header), with the checksum field as virtio has it; a partial
// checksum yields a NEEDS_CSUM Meta.
func TestUplinkReceivesTSOFromVirtioPeer(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := tsoSendingPeer(t)
	t.Logf("uplink: %+v", up.Status())

	super := tcp4(20*1448 + 3)
	// DPDK's TSO convention: the pseudo header's sum without the length
	// (the virtio driver adds it back).
	noLen := slices.Clone(super)
	binary.BigEndian.PutUint16(noLen[50:], fold(sum16(6, noLen[26:34])))
	rep, err := pr.dev.NewRepeater(pr.pool, [][]byte{noLen}, dpdk.TxMeta{Flags: dpdk.MbufTxTCPSeg | dpdk.MbufTxTCPCksum | dpdk.MbufTxIPv4, L2: 14, L3: 20, L4: 20, SegSize: 1448})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	csum := tcp4(700)
	crep, err := pr.dev.NewRepeater(pr.pool, [][]byte{csum}, dpdk.TxMeta{Flags: dpdk.MbufTxTCPCksum | dpdk.MbufTxIPv4, L2: 14, L3: 20, L4: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer crep.Close()
	if rep.Send(1) != 1 || crep.Send(1) != 1 {
		t.Fatal("the peer did not send")
	}
	var b vswitch.Burst
	var got []vswitch.Frame
	var data [][]byte
	for i := 0; i < 2000 && len(got) < 2; i++ {
		n := up.Receive(&b)
		for k := 0; k < n; k++ {
			got = append(got, b.Frames[k])
			data = append(data, bytes.Join(b.Frames[k].Segs, nil))
		}
		up.Done(&b)
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if len(got) != 2 {
		t.Fatalf("uplink received %d frames, want 2", len(got))
	}
	want := offload.Meta{Flags: offload.FlagNeedsCsum, GSOType: offload.GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16, L3Off: 14, L4HdrLen: 20}
	if got[0].Offload != want {
		t.Errorf("TSO frame's Meta %+v, want %+v", got[0].Offload, want)
	}
	if !bytes.Equal(data[0], super) {
		t.Errorf("TSO frame: %d bytes, equal to the sent frame (checksum field with the length) %v", len(data[0]), bytes.Equal(data[0], super))
	}
	if m := got[1].Offload; m != (offload.Meta{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}) || !bytes.Equal(data[1], csum) {
		t.Errorf("checksum frame: Meta %+v, bytes equal %v", m, bytes.Equal(data[1], csum))
	}
	// What a guest without GUEST_TSO gets: the switch's segmenter cuts
	// the received super-frame (ForReceiver says so).
	h := got[0].Offload.Header()
	if _, act := offload.ForReceiver(&h, got[0].Offload.Layout(len(data[0])), offload.FeatureGuestCsum); act != offload.ActionSegment {
		t.Errorf("for a receiver without GUEST_TSO4: %v, want segment", act)
	}
	if _, act := offload.ForReceiver(&h, got[0].Offload.Layout(len(data[0])), offload.FeatureGuestCsum|offload.FeatureGuestTSO4); act != offload.ActionPass {
		t.Errorf("for a GUEST_TSO4 receiver: %v, want pass", act)
	}
	if os := up.Status().Offloads; os.RxLRO != 1 || os.RxCsumPartial != 1 || os.RxOffloadInvalid != 0 {
		t.Errorf("offload stats %+v", os)
	}
	if allocs := testing.AllocsPerRun(20, func() {
		rep.Send(1)
		for n := 0; n == 0; {
			n = up.Receive(&b)
			up.Done(&b)
		}
	}); allocs != 0 {
		t.Errorf("%.1f allocations per LRO receive", allocs)
	}
}

// TestUplinkReceivesTSO6FromVirtioPeer: as TestUplinkReceivesTSOFromVirtioPeer
// for TCP over IPv6: a TSO frame from the frontend (TX_TCP_SEG with
// TX_IPV6) reaches a net_vhost,tso=1 uplink as RX_LRO and becomes a GSO
// TCPV6 Meta equal to what the guest's header would make, the checksum
// field holding the pseudo header's sum with the length again.
func TestUplinkReceivesTSO6FromVirtioPeer(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := tsoSendingPeer(t)
	super := tcp6(20*1428 + 5)
	noLen := slices.Clone(super)
	binary.BigEndian.PutUint16(noLen[70:], fold(sum16(6, noLen[22:54])))
	rep, err := pr.dev.NewRepeater(pr.pool, [][]byte{noLen}, dpdk.TxMeta{Flags: dpdk.MbufTxTCPSeg | dpdk.MbufTxTCPCksum | dpdk.MbufTxIPv6, L2: 14, L3: 40, L4: 20, SegSize: 1428})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	if rep.Send(1) != 1 {
		t.Fatal("the peer did not send")
	}
	var b vswitch.Burst
	var got *vswitch.Frame
	var data []byte
	for i := 0; i < 2000 && got == nil; i++ {
		if n := up.Receive(&b); n > 0 {
			f := b.Frames[0]
			got, data = &f, bytes.Join(f.Segs, nil)
		}
		up.Done(&b)
		if got == nil {
			time.Sleep(time.Millisecond)
		}
	}
	if got == nil {
		t.Fatal("the uplink received nothing")
	}
	want := withMeta(t, split(super), super, tso6Hdr).Offload
	if got.Offload != want {
		t.Errorf("IPv6 TSO frame's Meta %+v, want the guest header's %+v", got.Offload, want)
	}
	if !bytes.Equal(data, super) {
		t.Errorf("IPv6 TSO frame: %d bytes, differing from the sent frame (checksum field with the length) at %v", len(data), diff(data, super))
	}
	if os := up.Status().Offloads; os.RxLRO != 1 || os.RxOffloadInvalid != 0 {
		t.Errorf("offload stats %+v", os)
	}
}

// diff returns the offsets where a and b differ (at most 8), for messages.
func diff(a, b []byte) []string {
	var d []string
	for i := 0; i < min(len(a), len(b)) && len(d) < 8; i++ {
		if a[i] != b[i] {
			d = append(d, fmt.Sprintf("%d: %#x want %#x", i, a[i], b[i]))
		}
	}
	return d
}

// BenchmarkUplinkTSO transmits 64 KiB TSO super-frames from a guest
// through a net_virtio_user uplink to a net_vhost peer (both in this
// process, the peer draining its queue): with tso=1 the device takes the
// super-frame whole, with tso=0 vhostd segments it in software. Bytes are
// the super-frame's TCP payload.
func BenchmarkUplinkTSO(b *testing.B) {
	for _, tso := range []int{1, 0} {
		b.Run(fmt.Sprintf("tso%d", tso), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			up, pr := virtioUplinkB(b, tso)
			const payload = 45 * 1448 // 45 MSS-sized segments
			super := tcp4(payload)
			frames := []*vswitch.Frame{withMeta(b, split(super), super, tsoHdr)}
			want := 1
			if tso == 0 {
				want = (payload + 1447) / 1448
			}
			b.SetBytes(payload)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				up.Transmit(0, frames)
				for n, tries := 0, 0; n < want && tries < 1e6; tries++ {
					n += pr.rx.Receive(32)
					pr.rx.Release()
				}
			}
			b.StopTimer()
			s := up.Stats()
			if s.TxPackets == 0 || (tso == 1) != (s.GSOPassed > 0) {
				b.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestUplinkOffloadOrder: frames the device finishes and frames done in
// software keep their order in one Transmit: a TSO frame, an ECN
// super-frame (segmented in software: DPDK's TSO has no ECN flag), a
// partial checksum and a plain frame reach the peer in that order.
func TestUplinkOffloadOrder(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := virtioUplink(t, 1)
	a, b, c, d := tcp4(5*1448), tcp4(2*1448+1), tcp4(100), ethFrame(200, 9)
	b[47] |= 0x80 // CWR
	ecn := tsoHdr
	ecn.GSOType |= offload.GSOECN
	fb := split(b)
	lay, r := offload.Validate(&ecn, b, offload.FeatureCsum|offload.FeatureHostTSO4|offload.FeatureHostECN)
	if r != offload.ReasonOK {
		t.Fatal(r)
	}
	fb.Offload = offload.MetaOf(&ecn, lay)
	up.Transmit(0, []*vswitch.Frame{withMeta(t, split(a), a, tsoHdr), fb, withMeta(t, split(c), c, csumHdr), split(d)})
	got, ol, _ := pr.receive(t, 6)
	if len(got) != 6 {
		t.Fatalf("peer got %d frames, want 1 + 3 segments + 2", len(got))
	}
	if !bytes.Equal(got[0], a) || ol[0]&dpdk.MbufRxLRO == 0 {
		t.Error("frame 0 is not the TSO frame")
	}
	for i := 1; i <= 3; i++ {
		if len(got[i]) > 1514 || ol[i]&dpdk.MbufRxLRO != 0 {
			t.Errorf("frame %d: %d bytes, not a segment", i, len(got[i]))
		}
	}
	if got[1][47]&0x80 == 0 || got[2][47]&0x80 != 0 {
		t.Error("CWR: want it on the first segment only")
	}
	if !bytes.Equal(got[4], c) || !bytes.Equal(got[5], d) {
		t.Error("the checksum frame and the plain frame are not last, in order")
	}
	if s := up.Stats(); s.GSOPassed != 1 || s.GSOSegmented != 1 || s.GSOSegments != 3 || up.Status().Offloads.TxCsum != 1 {
		t.Errorf("stats %+v %+v", s, up.Status().Offloads)
	}
}

// TestUplinkOffloadHeadersChanged: a guest that changes a frame's headers
// after the VM port checked them (here the IP header length) gets the
// frame dropped as tx_offload_unsupported, not sent with a TSO request
// that no longer fits it.
func TestUplinkOffloadHeadersChanged(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	up, pr := virtioUplink(t, 1)
	a, d := tcp4(5*1448), ethFrame(200, 9)
	fa := withMeta(t, split(a), a, tsoHdr)
	a[14] = 0x46 // IHL 6: the TCP header is no longer where the Meta says
	up.Transmit(0, []*vswitch.Frame{fa, split(d)})
	got, _, _ := pr.receive(t, 1)
	if len(got) != 1 || !bytes.Equal(got[0], d) {
		t.Fatalf("peer got %d frames, want only the plain one", len(got))
	}
	if s := up.Stats(); s.Drops["tx_offload_unsupported"] != 1 || s.GSOPassed != 0 || s.TxPackets != 1 {
		t.Errorf("stats %+v", s)
	}
}

// checkTCP4Segments checks that segs (with their receive ol_flags) are
// plain MSS-sized TCP/IPv4 segments with valid checksums whose payloads,
// in order, are super's (a TCP/IPv4 super-frame with 54 bytes of headers).
func checkTCP4Segments(t *testing.T, segs [][]byte, ol []uint64, super []byte) {
	t.Helper()
	var data []byte
	for i, f := range segs {
		ip, tcp := f[14:34], f[34:]
		if len(f) > 1514 || ol[i]&dpdk.MbufRxLRO != 0 {
			t.Fatalf("segment %d: %d bytes, ol_flags %#x: not a segment", i, len(f), ol[i])
		}
		if fold(sum16(0, ip)) != 0xffff || fold(sum16(sum16(6+uint32(len(tcp)), ip[12:20]), tcp)) != 0xffff {
			t.Errorf("segment %d: bad checksum", i)
		}
		data = append(data, tcp[20:]...)
	}
	if !bytes.Equal(data, super[54:]) {
		t.Error("the segments' payload differs from the super-frame's")
	}
}

// tsoSendingPeer opens a net_vhost,tso=1 uplink (attached to the calling
// thread, which the caller locks) and a net_virtio_user peer on its socket
// that may send TSO frames and partial checksums, and waits for the link.
func tsoSendingPeer(t *testing.T) (*Port, *peer) {
	t.Helper()
	sock := fmt.Sprintf("%s/up.sock", t.TempDir())
	up := openUplink(t, Config{Devargs: fmt.Sprintf("net_vhost%d,iface=%s,tso=1", ringSeq.Add(1), sock)})
	if err := up.AttachThread(); err != nil {
		t.Fatal(err)
	}
	pr := newPeer(t, fmt.Sprintf("net_virtio_user%d,path=%s,queue_size=256,mac=02:00:00:00:00:0d", ringSeq.Add(1), sock),
		dpdk.PortConfig{TxOffloads: dpdk.TxOffloadTCPTSO | dpdk.TxOffloadTCPCksum | dpdk.TxOffloadMultiSeg})
	waitLinkUp(t, up)
	return up, pr
}
