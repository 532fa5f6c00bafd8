package vswitch

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vhostd/vhostd/switch/offload"
	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// Feature sets of the fake guests.
const (
	hostOffloads  = uint64(offload.FeatureCsum | offload.FeatureHostTSO4 | offload.FeatureHostTSO6 | offload.FeatureHostECN)
	guestOffloads = uint64(offload.FeatureGuestCsum | offload.FeatureGuestTSO4 | offload.FeatureGuestTSO6 | offload.FeatureGuestECN)
)

// newOffloadEnd is a guest with 12-byte headers, mergeable buffers and
// the negotiated features feat.
func newOffloadEnd(t testing.TB, s *Switch, name string, base, feat uint64) *vmEnd {
	t.Helper()
	e := newVMEnd(t, s, name, base, 12, true)
	r := *e.port.rings.Load()
	r.Features = feat
	e.port.Publish(&r)
	return e
}

// csum16 is the ones-complement sum of b (big-endian words) added to acc,
// unfolded.
func csum16(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

func fold16(acc uint32) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// tcp4Frame is an Ethernet/IPv4/TCP frame from MAC ..src to ..dst with
// payload bytes, whose TCP checksum field holds the pseudo-header sum (a
// partial checksum, as a driver leaves it with NEEDS_CSUM).
func tcp4Frame(dst, src byte, payload int, seq uint32) []byte {
	f := ethFrame(dst, src, 14+20+20+payload)
	ip := f[14:34]
	copy(ip, []byte{0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, src, 10, 0, 0, dst})
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+payload))
	binary.BigEndian.PutUint16(ip[10:], ^fold16(csum16(0, ip)))
	tcp := f[34:54]
	for i := range tcp {
		tcp[i] = 0
	}
	binary.BigEndian.PutUint16(tcp[0:], 1000)
	binary.BigEndian.PutUint16(tcp[2:], 2000)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // ACK, PSH
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	binary.BigEndian.PutUint16(tcp[16:], fold16(pseudo4(ip, 20+payload)))
	return f
}

func pseudo4(ip []byte, l4len int) uint32 {
	acc := csum16(0, ip[12:20])
	return acc + 6 + uint32(l4len)
}

// checkTCP4 checks a frame's IPv4 and TCP checksums and returns its
// sequence number and payload.
func checkTCP4(t *testing.T, f []byte) (uint32, []byte) {
	t.Helper()
	ip := f[14:34]
	if fold16(csum16(0, ip)) != 0xffff {
		t.Fatalf("bad IPv4 header checksum in %x", f[:54])
	}
	if int(binary.BigEndian.Uint16(ip[2:])) != len(f)-14 {
		t.Fatalf("IPv4 length %d for a %d-byte frame", binary.BigEndian.Uint16(ip[2:]), len(f))
	}
	tcp := f[34:]
	if fold16(csum16(pseudo4(ip, len(tcp)), tcp)) != 0xffff {
		t.Fatalf("bad TCP checksum in %x", f[:54])
	}
	return binary.BigEndian.Uint32(tcp[4:]), tcp[20:]
}

// sendHdr queues frame behind the virtio-net header h, header and the
// first split bytes in one descriptor, the rest in another.
func (e *vmEnd) sendHdr(h offload.Header, frame []byte, split int) {
	b := make([]byte, e.hdr)
	h.Encode(b)
	e.tx.AddChain([]virtqueuetest.Buf{{Data: append(b, frame[:split]...)}, {Data: frame[split:]}})
}

// frames returns what the guest received, header and frame apart, its
// mergeable buffers joined by num_buffers.
func (e *vmEnd) frames(t *testing.T) (hdrs []offload.Header, frames [][]byte) {
	t.Helper()
	bufs := e.anyReceived()
	for len(bufs) > 0 {
		var h offload.Header
		h.Decode(bufs[0][:12])
		n := int(h.NumBuffers)
		if n < 1 || n > len(bufs) {
			t.Fatalf("num_buffers %d with %d buffers left", n, len(bufs))
		}
		f := append([]byte(nil), bufs[0][12:]...)
		for _, b := range bufs[1:n] {
			f = append(f, b...)
		}
		h.NumBuffers = 0
		hdrs, frames = append(hdrs, h), append(frames, f)
		bufs = bufs[n:]
	}
	return hdrs, frames
}

const mss = 1448

func tsoHeader(f []byte) offload.Header {
	return offload.Header{Flags: offload.FlagNeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: 54, GSOSize: mss, CsumStart: 34, CsumOffset: 16}
}

// TestOffloadFloodPerReceiver floods one TSO super-frame to three guests:
// one that takes TSO gets it whole with the header translated, one with
// only GUEST_CSUM and one without offloads get segments with correct
// checksums (the first marked DATA_VALID).
func TestOffloadFloodPerReceiver(t *testing.T) {
	s := newTestSwitch(t)
	a := newOffloadEnd(t, s, "a", 0, hostOffloads)
	full := newOffloadEnd(t, s, "full", 0x100000000, guestOffloads)
	csumOnly := newOffloadEnd(t, s, "csum", 0x200000000, uint64(offload.FeatureGuestCsum))
	none := newOffloadEnd(t, s, "none", 0x300000000, 0)
	for _, e := range []*vmEnd{full, csumOnly, none} {
		e.post(16, 2048)
	}
	const payload = 3*mss + 100
	super := tcp4Frame(0xee, 0xa, payload, 7000) // 0xee: unknown, flooded
	a.sendHdr(tsoHeader(super), super, 54)
	if n := pump(s, a); n != 1 {
		t.Fatalf("forwarded %d frames", n)
	}

	hs, fs := full.frames(t)
	want := offload.Header{Flags: offload.FlagNeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: 54, GSOSize: mss, CsumStart: 34, CsumOffset: 16}
	if len(fs) != 1 || hs[0] != want || !bytes.Equal(fs[0], super) {
		t.Fatalf("TSO receiver got %d frames, headers %+v", len(fs), hs)
	}
	if st := full.port.Stats(); st.GSOPassed != 1 || st.GSOSegmented != 0 || st.TxPackets != 1 {
		t.Fatalf("TSO receiver's counters %+v", st)
	}

	for _, c := range []struct {
		e   *vmEnd
		hdr offload.Header
	}{{csumOnly, offload.Header{Flags: offload.FlagDataValid}}, {none, offload.Header{}}} {
		hs, fs := c.e.frames(t)
		if len(fs) != 4 {
			t.Fatalf("%s: %d segments, want 4", c.e.port.Name(), len(fs))
		}
		var data []byte
		next := uint32(7000)
		for i, f := range fs {
			if hs[i] != c.hdr {
				t.Fatalf("%s: segment %d header %+v, want %+v", c.e.port.Name(), i, hs[i], c.hdr)
			}
			if !bytes.Equal(f[:14], super[:14]) {
				t.Fatalf("%s: segment %d Ethernet header %x", c.e.port.Name(), i, f[:14])
			}
			seq, p := checkTCP4(t, f)
			if seq != next || (i < 3 && len(p) != mss) {
				t.Fatalf("%s: segment %d seq %d len %d", c.e.port.Name(), i, seq, len(p))
			}
			if id := binary.BigEndian.Uint16(f[18:]); id != 0x1234+uint16(i) {
				t.Fatalf("%s: segment %d IP ID %#x", c.e.port.Name(), i, id)
			}
			next += uint32(len(p))
			data = append(data, p...)
		}
		if !bytes.Equal(data, super[54:]) {
			t.Fatalf("%s: segments' payload differs from the super-frame's", c.e.port.Name())
		}
		st := c.e.port.Stats()
		if st.GSOSegmented != 1 || st.GSOSegments != 4 || st.GSOPassed != 0 || st.TxPackets != 4 {
			t.Fatalf("%s: counters %+v", c.e.port.Name(), st)
		}
	}
}

// TestOffloadChecksum: a frame with a partial checksum reaches a
// GUEST_CSUM receiver as it is, with NEEDS_CSUM, and one without
// completed.
func TestOffloadChecksum(t *testing.T) {
	s := newTestSwitch(t)
	a := newOffloadEnd(t, s, "a", 0, hostOffloads)
	b := newOffloadEnd(t, s, "b", 0x100000000, uint64(offload.FeatureGuestCsum))
	c := newOffloadEnd(t, s, "c", 0x200000000, 0)
	b.post(4, 2048)
	c.post(4, 2048)
	f := tcp4Frame(0xee, 0xa, 1001, 5) // odd length
	h := offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
	for _, split := range []int{7, 35, 51} { // the checksummed part split at even and odd offsets
		a.sendHdr(h, f, split)
		pump(s, a)
		hs, fs := b.frames(t)
		if len(fs) != 1 || hs[0] != h || !bytes.Equal(fs[0], f) {
			t.Fatalf("split %d: GUEST_CSUM receiver got %+v", split, hs)
		}
		hs, fs = c.frames(t)
		if len(fs) != 1 || hs[0] != (offload.Header{}) {
			t.Fatalf("split %d: receiver without offloads got %+v", split, hs)
		}
		checkTCP4(t, fs[0])
		if !bytes.Equal(fs[0][:50], f[:50]) || !bytes.Equal(fs[0][52:], f[52:]) {
			t.Fatalf("split %d: completing the checksum changed other bytes", split)
		}
		b.post(1, 2048)
		c.post(1, 2048)
	}
	if st := c.port.Stats(); st.CsumCompleted != 3 {
		t.Fatalf("counters %+v", st)
	}
	if st := b.port.Stats(); st.CsumCompleted != 0 {
		t.Fatalf("counters %+v", st)
	}
}

// TestOffloadInvalidHeadersCounted: frames whose header a guest filled in
// wrongly, or with offloads it did not negotiate, are dropped and counted
// by reason; the guest's good frames still pass.
func TestOffloadInvalidHeadersCounted(t *testing.T) {
	s := newTestSwitch(t)
	a := newOffloadEnd(t, s, "a", 0, hostOffloads)
	plain := newOffloadEnd(t, s, "plain", 0x100000000, 0)
	b := newOffloadEnd(t, s, "b", 0x200000000, guestOffloads)
	b.post(16, 2048)
	super := tcp4Frame(0xee, 0xa, 3000, 1)
	tso := tsoHeader(super)
	cases := []struct {
		from   *vmEnd
		h      offload.Header
		reason string
	}{
		{a, offload.Header{Flags: offload.FlagDataValid}, "rx_offload_flags_invalid"},
		{a, func() offload.Header { h := tso; h.GSOSize = 0; return h }(), "rx_offload_gso_size_zero"},
		{a, func() offload.Header { h := tso; h.GSOType = offload.GSOTCPv6; return h }(), "rx_offload_gso_type_mismatch"},
		{a, func() offload.Header { h := tso; h.GSOType = offload.GSOUDP; return h }(), "rx_offload_not_negotiated"},
		{a, func() offload.Header { h := tso; h.GSOType = 9; return h }(), "rx_offload_gso_type_unknown"},
		{a, func() offload.Header { h := tso; h.Flags = 0; return h }(), "rx_offload_gso_without_csum"},
		{a, func() offload.Header { h := tso; h.CsumOffset = 6; return h }(), "rx_offload_csum_not_l4"},
		{a, offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 3050, CsumOffset: 16}, "rx_offload_csum_outside_frame"},
		{plain, offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}, "rx_offload_not_negotiated"},
		{plain, tso, "rx_offload_not_negotiated"},
	}
	for _, c := range cases {
		before := c.from.port.Stats().Drops[c.reason]
		c.from.sendHdr(c.h, super, 20)
		if n := pump(s, c.from); n != 0 {
			t.Fatalf("%s: %d frames forwarded", c.reason, n)
		}
		if got := c.from.port.Stats().Drops[c.reason]; got != before+1 {
			t.Fatalf("%s: counted %d, want %d (%v)", c.reason, got, before+1, c.from.port.Stats().Drops)
		}
	}
	if got := b.received(); len(got) != 0 {
		t.Fatalf("refused frames delivered: %d buffers", len(got))
	}
	a.sendHdr(tso, super, 20)
	if n := pump(s, a); n != 1 {
		t.Fatalf("a valid frame after the refused ones: %d forwarded", n)
	}
	// A header split across descriptors is read like one in a piece:
	// the one the receive loop's fast path does not take.
	for _, cut := range []int{1, 4, plain.hdr} {
		before := plain.port.Stats().Drops["rx_offload_not_negotiated"]
		h := make([]byte, plain.hdr)
		tso.Encode(h)
		plain.tx.AddChain([]virtqueuetest.Buf{{Data: h[:cut]}, {Data: append(h[cut:], super...)}})
		if n := pump(s, plain); n != 0 {
			t.Fatalf("header cut at %d: %d frames forwarded", cut, n)
		}
		if got := plain.port.Stats().Drops["rx_offload_not_negotiated"]; got != before+1 {
			t.Fatalf("header cut at %d: counted %d, want %d", cut, got, before+1)
		}
	}
}

// TestOffloadAllocatesNothing: software segmentation, checksum
// completion and passing make no allocation per frame.
func TestOffloadAllocatesNothing(t *testing.T) {
	s := newTestSwitch(t)
	a := newOffloadEnd(t, s, "a", 0, hostOffloads)
	none := newOffloadEnd(t, s, "none", 0x100000000, 0)
	full := newOffloadEnd(t, s, "full", 0x200000000, guestOffloads)
	// Learn both receivers' addresses.
	none.send(ethFrame(0xa, 0xb, 60), 14)
	full.send(ethFrame(0xa, 0xc, 60), 14)
	a.post(2, 2048)
	pump(s, none, full)
	const runs = 1
	super := tcp4Frame(0xb, 0xa, 2*mss, 1)
	passed := tcp4Frame(0xc, 0xa, 2*mss, 1)
	csum := tcp4Frame(0xb, 0xa, 500, 1)
	csumH := offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
	for i := 0; i < (runs+1)*BurstSize/4; i++ {
		a.sendHdr(tsoHeader(super), super, 54)
		a.sendHdr(tsoHeader(passed), passed, 54)
		a.sendHdr(csumH, csum, 54)
		a.sendHdr(csumH, csum, 54)
	}
	none.post(200, 2048)
	full.post(100, 2048)
	allocs := testing.AllocsPerRun(runs, func() {
		if n := pump(s, a); n != BurstSize {
			t.Fatalf("forwarded %d frames, want a full burst", n)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.2f allocations per burst", allocs)
	}
	st := none.port.Stats()
	if st.GSOSegments != 2*st.GSOSegmented || st.GSOSegmented != (runs+1)*BurstSize/4 || st.CsumCompleted != (runs+1)*BurstSize/2 {
		t.Fatalf("counters of the receiver without offloads %+v", st)
	}
	if st := full.port.Stats(); st.GSOPassed != (runs+1)*BurstSize/4 {
		t.Fatalf("counters of the TSO receiver %+v", st)
	}
}

// TestSoftOffloadLinear is the uplink's use: a port that takes no
// offloads gets, in order, the plain frames as they are, the checksummed
// frame completed in a copy (the sender's bytes untouched), and the
// super-frame's segments, in chunks of at most BurstSize frames; with no
// allocation.
func TestSoftOffloadLinear(t *testing.T) {
	x := NewSoftOffload(true)
	mk := func(b []byte, h offload.Header) *Frame {
		f := &Frame{Segs: [][]byte{b[:20], b[20:]}, Len: len(b)}
		if h != (offload.Header{}) {
			lay, r := offload.Validate(&h, b, offload.Features(hostOffloads))
			if r != offload.ReasonOK {
				t.Fatalf("validate: %v", r)
			}
			f.Offload = offload.MetaOf(&h, lay)
		}
		return f
	}
	plain := ethFrame(0xb, 0xa, 60)
	csum := tcp4Frame(0xb, 0xa, 777, 9)
	csumCopy := append([]byte(nil), csum...)
	// 45 segments: more than one chunk holds (BurstSize frames, and
	// segments totalling at most the arena's maxOffloadFrame bytes).
	const payload = 44*mss + 10
	super := tcp4Frame(0xb, 0xa, payload, 100)
	frames := []*Frame{
		mk(plain, offload.Header{}),
		mk(csum, offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}),
		mk(super, tsoHeader(super)),
		mk(plain, offload.Header{}),
	}
	var got [][]byte
	chunks := 0
	for fs := x.Begin(frames, 0); len(fs) > 0; fs = x.Next(nil) {
		if len(fs) > BurstSize {
			t.Fatalf("chunk of %d frames", len(fs))
		}
		chunks++
		for _, f := range fs {
			if !f.Offload.Plain() {
				t.Fatal("a frame with an offload left in a chunk")
			}
			var b []byte
			for _, s := range f.Segs {
				b = append(b, s...)
			}
			got = append(got, b)
		}
	}
	if len(got) != 2+45+1 || chunks < 2 {
		t.Fatalf("%d frames in %d chunks", len(got), chunks)
	}
	if !bytes.Equal(got[0], plain) || !bytes.Equal(got[len(got)-1], plain) {
		t.Fatal("plain frames changed or out of order")
	}
	checkTCP4(t, got[1])
	if !bytes.Equal(csum, csumCopy) {
		t.Fatal("completing the checksum wrote into the sender's frame")
	}
	var data []byte
	for _, f := range got[2 : 2+45] {
		_, p := checkTCP4(t, f)
		data = append(data, p...)
	}
	if !bytes.Equal(data, super[54:]) {
		t.Fatal("segments' payload differs")
	}
	var c Counters
	x.Count(&c)
	if c.GSOSegmented.Load() != 1 || c.GSOSegments.Load() != 45 || c.CsumCompleted.Load() != 1 {
		t.Fatalf("counters: segmented %d segments %d csum %d", c.GSOSegmented.Load(), c.GSOSegments.Load(), c.CsumCompleted.Load())
	}
	allocs := testing.AllocsPerRun(5, func() {
		for fs := x.Begin(frames, 0); len(fs) > 0; fs = x.Next(nil) {
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per transmit", allocs)
	}
}

// TestOffloadNoMergeableSegments: a guest that negotiated GUEST_TSO4 but
// not mergeable buffers gets segments, marked DATA_VALID (its GSO
// buffers would be chains of more segments than transmit uses).
func TestOffloadNoMergeableSegments(t *testing.T) {
	s := newTestSwitch(t)
	a := newOffloadEnd(t, s, "a", 0, hostOffloads)
	b := newVMEnd(t, s, "b", 0x100000000, 12, false)
	r := *b.port.rings.Load()
	r.Features = guestOffloads
	b.port.Publish(&r)
	b.post(8, 2048)
	super := tcp4Frame(0xee, 0xa, 2*mss, 1)
	a.sendHdr(tsoHeader(super), super, 54)
	pump(s, a)
	got := b.received()
	if len(got) != 2 {
		t.Fatalf("%d frames, want 2 segments", len(got))
	}
	for _, g := range got {
		if g[0] != offload.FlagDataValid {
			t.Fatalf("segment header %x", g[:12])
		}
		checkTCP4(t, g[12:])
	}
}

// offloadPair is a switch with sender a (host offloads) and receiver c,
// at MAC 0xb, with the features rx; the switch has learnt c.
func offloadPair(tb testing.TB, rx uint64) (s *Switch, a, c *vmEnd) {
	tb.Helper()
	s = newTestSwitch(tb)
	a = newOffloadEnd(tb, s, "a", 0, hostOffloads)
	c = newOffloadEnd(tb, s, "c", 0x100000000, rx)
	c.send(ethFrame(0xa, 0xb, 64), 14) // learn c
	a.post(1, 2048)
	pump(s, c)
	a.received()
	return s, a, c
}

// benchOffload measures one kind of offloaded frame from a guest with
// host offloads to a guest with the features rx: inflight frames in
// flight, recycled by both drivers; each op is one frame of payload bytes
// of TCP data (segmented or not).
func benchOffload(b *testing.B, payload, inflight int, h func([]byte) offload.Header, rx uint64) {
	s, a, c := offloadPair(b, rx)
	f := tcp4Frame(0xb, 0xa, payload, 1)
	for i := 0; i < inflight; i++ {
		a.sendHdr(h(f), f, 54)
	}
	c.post(250, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(payload))
	b.ResetTimer()
	for n := 0; n < b.N; {
		n += pump(s, a)
		a.tx.Recycle()
		c.rx.Recycle()
	}
	b.StopTimer()
	st := c.port.Stats()
	if st.TxPackets == 0 {
		b.Fatalf("nothing delivered: %+v", st)
	}
	if d := st.Drops["tx_no_buffers"] + st.Drops["tx_too_big"]; d > 0 {
		b.Fatalf("%d frames dropped", d)
	}
}

func csumHeader([]byte) offload.Header {
	return offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
}

func plainHeader([]byte) offload.Header { return offload.Header{} }

// 16 segments of 1448 bytes: a 23 KiB super-frame, 8 in flight (12
// receive buffers each); single frames 32 in flight, as a full burst.
func BenchmarkOffloadTSOPass(b *testing.B) { benchOffload(b, 16*mss, 8, tsoHeader, guestOffloads) }
func BenchmarkOffloadTSOSegment(b *testing.B) {
	benchOffload(b, 16*mss, 8, tsoHeader, uint64(offload.FeatureGuestCsum))
}
func BenchmarkOffloadPlain1448(b *testing.B)    { benchOffload(b, mss, 32, plainHeader, guestOffloads) }
func BenchmarkOffloadCsumPass(b *testing.B)     { benchOffload(b, mss, 32, csumHeader, guestOffloads) }
func BenchmarkOffloadCsumComplete(b *testing.B) { benchOffload(b, mss, 32, csumHeader, 0) }

// FuzzSoftOffloadChangedFrame: a guest may rewrite its buffers after
// the switch validated the header (between receive and transmit). The
// software path then makes garbage of that guest's frame, but never
// panics, reads or writes outside its buffers, or makes a frame longer
// than the one validated.
func FuzzSoftOffloadChangedFrame(f *testing.F) {
	f.Add([]byte{0}, uint16(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint16(46)) // TCP data offset
	f.Add([]byte{0x0f}, uint16(14))                   // IHL
	f.Add([]byte{0xff, 0xff}, uint16(16))             // IP length
	super := tcp4Frame(0xb, 0xa, 5*mss+3, 1)
	h := tsoHeader(super)
	lay, r := offload.Validate(&h, super, offload.Features(hostOffloads))
	if r != offload.ReasonOK {
		f.Fatal(r)
	}
	csumH := offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
	x := NewSoftOffload(true)
	f.Fuzz(func(t *testing.T, xor []byte, at uint16) {
		b := append([]byte(nil), super...)
		for i, v := range xor {
			if j := int(at) + i; j < len(b) {
				b[j] ^= v
			}
		}
		frames := []*Frame{
			{Segs: [][]byte{b[:30], b[30:]}, Len: len(b), Offload: offload.MetaOf(&h, lay)},
			{Segs: [][]byte{b[:51], b[51:]}, Len: len(b), Offload: offload.MetaOf(&csumH, offload.Layout{})},
		}
		for _, feat := range []offload.Features{0, offload.FeatureGuestCsum} {
			for fs := x.Begin(frames, feat); len(fs) > 0; fs = x.Next(nil) {
				for _, o := range fs {
					// A receiver with GUEST_CSUM takes the partial
					// checksum: that frame passes as it is.
					if o.Len > len(b) || (feat == 0 && !o.Offload.Plain()) {
						t.Fatalf("frame of %d bytes, offload %+v", o.Len, o.Offload)
					}
				}
			}
		}
	})
}

// TestOffloadLargeSegmentsCopiedWhole passes TSO super-frames of about
// 58 KiB to a receiver that takes them whole, into one 64 KiB buffer and
// into merged 8 KiB buffers, from senders whose frame is in one segment
// and in two: copies that large go through bulkcopy's string move, and
// every byte must land where the builtin copy would put it.
func TestOffloadLargeSegmentsCopiedWhole(t *testing.T) {
	for _, c := range []struct {
		name      string
		bufs, buf int
		split     int // the sender's first descriptor: header and split bytes
	}{
		{"one 64 KiB buffer, one source segment", 1, 64 << 10, 54},
		{"one 64 KiB buffer, two source segments", 1, 64 << 10, 5000},
		{"merged 8 KiB buffers, two source segments", 8, 8 << 10, 9000},
	} {
		s, a, b := offloadPair(t, guestOffloads)
		b.post(c.bufs, c.buf)
		super := tcp4Frame(0xb, 0xa, 40*mss, 9000)
		a.sendHdr(tsoHeader(super), super, c.split)
		if n := pump(s, a); n != 1 {
			t.Fatalf("%s: forwarded %d frames", c.name, n)
		}
		hs, fs := b.frames(t)
		if len(fs) != 1 || !bytes.Equal(fs[0], super) || hs[0] != tsoHeader(super) {
			t.Fatalf("%s: b received %d frames, equal %v", c.name, len(fs), len(fs) == 1 && bytes.Equal(fs[0], super))
		}
		if st := b.port.Stats(); st.GSOPassed != 1 || st.TxPackets != 1 {
			t.Fatalf("%s: b's counters %+v", c.name, st)
		}
	}
}

// TestOffloadHeaderOverRecycledBuffers passes TSO super-frames into
// receive buffers that already hold a header, as a driver's recycled
// buffers do: another frame's (stale bytes, every field wrong) and the
// very header the frame gets (which the switch leaves unwritten). The
// receiver must see the frame's header and num_buffers either way, in one
// buffer and across merged ones.
func TestOffloadHeaderOverRecycledBuffers(t *testing.T) {
	for _, c := range []struct {
		name      string
		bufs, buf int
	}{{"one buffer", 1, 64 << 10}, {"merged buffers", 8, 8 << 10}} {
		for _, stale := range []string{"stale", "same"} {
			s, a, b := offloadPair(t, guestOffloads)
			super := tcp4Frame(0xb, 0xa, 40*mss, 9000)
			want := tsoHeader(super)
			for i := 0; i < c.bufs; i++ {
				head := b.rx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: c.buf}})
				h := b.rx.Read(b.rx.DescAddr(head), 12)
				if stale == "stale" {
					copy(h, bytes.Repeat([]byte{0xff}, 12))
				} else {
					w := want
					w.NumBuffers = uint16(c.bufs)
					w.Encode(h)
				}
			}
			a.sendHdr(want, super, 54)
			if n := pump(s, a); n != 1 {
				t.Fatalf("%s, %s header: forwarded %d frames", c.name, stale, n)
			}
			hs, fs := b.frames(t) // checks num_buffers against the buffers used
			if len(fs) != 1 || hs[0] != want || !bytes.Equal(fs[0], super) {
				t.Fatalf("%s, %s header: b received %d frames, headers %+v", c.name, stale, len(fs), hs)
			}
		}
	}
}

// TestOffloadHeaderAfterChainWithoutRoom: a guest that puts a chain with no
// writable segment first on its receive ring, then merged buffers, gets a
// passed TSO super-frame in the buffers that have room, its header in the
// first of them, and the daemon does not fall over the empty one.
func TestOffloadHeaderAfterChainWithoutRoom(t *testing.T) {
	s, a, b := offloadPair(t, guestOffloads)
	b.rx.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 64)}}) // read-only: no room
	for i := 0; i < 8; i++ {
		b.post(1, 8<<10)
	}
	super := tcp4Frame(0xb, 0xa, 40*mss, 9000)
	want := tsoHeader(super)
	a.sendHdr(want, super, 54)
	if n := pump(s, a); n != 1 {
		t.Fatalf("forwarded %d frames", n)
	}
	var got []byte
	used := b.rx.CollectUsed()
	for i, u := range used {
		if i == 0 && u.Len != 0 {
			t.Fatalf("the chain without room used for %d bytes", u.Len)
		}
		got = append(got, b.rx.Read(b.rx.DescAddr(u.ID), int(u.Len))...)
	}
	var h offload.Header
	h.Decode(got)
	if int(h.NumBuffers) != len(used) {
		t.Errorf("num_buffers %d for %d chains", h.NumBuffers, len(used))
	}
	h.NumBuffers = 0
	if h != want || !bytes.Equal(got[12:], super) {
		t.Fatalf("header %+v, frame equal %v (%d bytes)", h, bytes.Equal(got[12:], super), len(got)-12)
	}
	if st := b.port.Stats(); st.GSOPassed != 1 || st.TxPackets != 1 {
		t.Fatalf("b's counters %+v", st)
	}
}

// TestOffloadChecksumsBeforeBreak: frames whose checksums vhostd completes
// for the receiver, copied into the buffers the receiver posted before a
// bad one broke its queue, each carry their own checksum.
func TestOffloadChecksumsBeforeBreak(t *testing.T) {
	s := newTestSwitch(t)
	a := newOffloadEnd(t, s, "a", 0, hostOffloads)
	c := newOffloadEnd(t, s, "c", 0x200000000, 0)
	c.post(2, 2048)
	c.rx.Publish(999) // a head out of range: the queue breaks there
	h := offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
	var sent [][]byte
	for i := 0; i < 4; i++ {
		f := tcp4Frame(0xee, 0xa, 100+i*37, uint32(i*1000))
		sent = append(sent, f)
		a.sendHdr(h, f, 54)
	}
	pump(s, a)
	hs, fs := c.frames(t)
	if len(fs) != 2 {
		t.Fatalf("c got %d frames, want the 2 its good buffers hold", len(fs))
	}
	for i, f := range fs {
		if hs[i] != (offload.Header{}) || !bytes.Equal(f[:50], sent[i][:50]) || !bytes.Equal(f[52:], sent[i][52:]) {
			t.Fatalf("frame %d: header %+v, or bytes other than the checksum differ", i, hs[i])
		}
		checkTCP4(t, f)
	}
	if st := c.port.Stats(); st.Drops["tx_queue_broken"] != 2 || st.TxPackets != 2 || st.CsumCompleted != 2 {
		t.Fatalf("c: tx %d, csum_completed %d, drops %v; want 2, 2 and tx_queue_broken 2 (the frames lost)", st.TxPackets, st.CsumCompleted, st.Drops)
	}
}

// TestOffloadsHoldMTUOnWhatTheyValidate: the receive loop lets a frame
// longer than the port's MTU through to validation when its header asks
// for GSO, but the header is in guest memory and the guest may clear it
// meanwhile. offloads, which looks at the header again, holds every frame
// that is not GSO by what it validated to the MTU, while a valid GSO
// frame of the same length passes.
func TestOffloadsHoldMTUOnWhatTheyValidate(t *testing.T) {
	s := newTestSwitch(t)
	a := newOffloadEnd(t, s, "a", 0, hostOffloads)
	l := a.port.lanes[0]
	r := &vhost.Rings{HdrLen: 12, Features: hostOffloads, MTU: 1400}
	limit := frameLimit(r)

	plain := ethFrame(0xb, 0xa, 2000)
	cleared := make([]byte, 12) // the header as the guest left it: nothing asked
	super := tcp4Frame(0xb, 0xa, 3*mss, 1)
	tso := make([]byte, 12)
	th := tsoHeader(super)
	th.Encode(tso)

	var b Burst
	b.Frames[0] = Frame{Segs: [][]byte{plain}, Len: len(plain)}
	b.Frames[1] = Frame{Segs: [][]byte{super}, Len: len(super)}
	b.Frames[2] = Frame{Segs: [][]byte{plain[:limit]}, Len: limit}
	l.rxo.hdrs[0], l.rxo.hdrs[1], l.rxo.hdrs[2] = &cleared[0], &tso[0], &cleared[0]
	n := l.offloads(&b, 0, 3, r, limit)
	if n != 2 || b.Frames[0].Len != len(super) || !b.Frames[0].Offload.GSO() || b.Frames[1].Len != limit {
		t.Fatalf("kept %d frames (%d bytes, GSO %v; %d bytes), want the TSO frame and the one within the MTU", n, b.Frames[0].Len, b.Frames[0].Offload.GSO(), b.Frames[1].Len)
	}
	if d := l.counters.Drops[DropMTUExceeded].Load(); d != 1 {
		t.Fatalf("mtu_exceeded %d, want 1", d)
	}
}
