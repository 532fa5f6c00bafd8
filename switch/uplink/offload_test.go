//go:build cgo

package uplink

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/switch/offload"
)

func sum16(acc uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		acc += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

func fold(acc uint32) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// tcp4 is an Ethernet/IPv4/TCP frame with payload bytes and a partial
// TCP checksum (the pseudo header's sum), as a guest hands it over with
// NEEDS_CSUM.
func tcp4(payload int) []byte {
	f := ethFrame(54+payload, 7)
	ip, tcp := f[14:34], f[34:54]
	copy(f[12:], []byte{8, 0})
	copy(ip, []byte{0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[2:], uint16(40+payload))
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(0, ip)))
	for i := range tcp {
		tcp[i] = 0
	}
	tcp[12], tcp[13] = 5<<4, 0x10
	binary.BigEndian.PutUint16(tcp[16:], fold(sum16(6+uint32(20+payload), ip[12:20])))
	return f
}

// TestTransmitCompletesOffloads: frames from a guest with a partial
// checksum or a GSO super-frame leave the uplink (which takes no
// offloads) complete: checksummed, and cut into MTU-sized segments.
func TestTransmitCompletesOffloads(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := openRing(t, Config{MTU: 1500})
	if err := p.AttachThread(); err != nil {
		t.Fatal(err)
	}
	meta := func(f *vswitch.Frame, b []byte, h offload.Header) *vswitch.Frame {
		lay, r := offload.Validate(&h, b, offload.FeatureCsum|offload.FeatureHostTSO4)
		if r != offload.ReasonOK {
			t.Fatalf("validate: %v", r)
		}
		f.Offload = offload.MetaOf(&h, lay)
		return f
	}
	csum := tcp4(900)
	super := tcp4(3*1448 + 5)
	frames := []*vswitch.Frame{
		meta(split(csum), csum, offload.Header{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}),
		meta(split(super), super, offload.Header{Flags: offload.FlagNeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}),
	}
	p.Transmit(0, frames)
	var b vswitch.Burst
	n := p.Receive(&b)
	if n != 5 {
		t.Fatalf("received %d frames, want 1 + 4 segments; stats %+v", n, p.Stats())
	}
	var data []byte
	for i := 0; i < n; i++ {
		f := bytes.Join(b.Frames[i].Segs, nil)
		if len(f) > 1514 {
			t.Fatalf("frame %d: %d bytes, beyond the MTU", i, len(f))
		}
		ip, tcp := f[14:34], f[34:]
		if fold(sum16(0, ip)) != 0xffff || fold(sum16(sum16(6+uint32(len(tcp)), ip[12:20]), tcp)) != 0xffff {
			t.Fatalf("frame %d: bad checksum", i)
		}
		if i > 0 {
			data = append(data, tcp[20:]...)
		}
	}
	p.Done(&b)
	if !bytes.Equal(data, super[54:]) {
		t.Fatal("segments' payload differs from the super-frame's")
	}
	if st := p.Stats(); st.TxPackets != 5 || st.GSOSegmented != 1 || st.GSOSegments != 4 || st.CsumCompleted != 1 {
		t.Fatalf("stats %+v", st)
	}
	if allocs := testing.AllocsPerRun(5, func() {
		p.Transmit(0, frames)
		p.Receive(&b)
		p.Done(&b)
	}); allocs != 0 {
		t.Fatalf("%.1f allocations per transmit", allocs)
	}
}

// TestReceiveChecksumFlags: the mbuf checksum flags a NIC sets become the
// Meta a guest gets: GOOD is DATA_VALID, BAD passes plain and is
// counted, NONE (a partial checksum) is NEEDS_CSUM, or, with Ethernet
// padding behind the IP packet, is completed here.
func TestReceiveChecksumFlags(t *testing.T) {
	p := &Port{rxLin: make([]byte, maxOffloadFrame)}
	frame := func(pad int) *vswitch.Frame {
		f := tcp4(10)
		f = append(f, make([]byte, pad)...)
		return &vswitch.Frame{Segs: [][]byte{f}, Len: len(f)}
	}
	var tl rxTally
	if m := p.rxMeta(frame(0), dpdk.MbufRxL4CksumGood|dpdk.MbufRxIPCksumGood, 0, &tl); m != (offload.Meta{Flags: offload.FlagDataValid}) {
		t.Errorf("L4 good: %+v", m)
	}
	for _, ol := range []uint64{dpdk.MbufRxL4CksumBad, dpdk.MbufRxIPCksumBad | dpdk.MbufRxL4CksumGood} {
		if m := p.rxMeta(frame(0), ol, 0, &tl); !m.Plain() {
			t.Errorf("bad %#x: %+v, want plain", ol, m)
		}
	}
	if m := p.rxMeta(frame(0), dpdk.MbufRxL4CksumNone, 0, &tl); m != (offload.Meta{Flags: offload.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}) {
		t.Errorf("L4 none: %+v", m)
	}
	f := frame(6)
	if m := p.rxMeta(f, dpdk.MbufRxL4CksumNone, 0, &tl); m != (offload.Meta{Flags: offload.FlagDataValid}) {
		t.Errorf("L4 none with padding: %+v, want completed here", m)
	}
	b := f.Segs[0][:f.Len-6]
	ip, tcp := b[14:34], b[34:]
	if fold(sum16(sum16(6+uint32(len(tcp)), ip[12:20]), tcp)) != 0xffff {
		t.Error("padded frame: checksum not completed")
	}
	runt := &vswitch.Frame{Segs: [][]byte{make([]byte, 20)}, Len: 20}
	if m := p.rxMeta(runt, dpdk.MbufRxLRO|dpdk.MbufRxL4CksumNone, 1448, &tl); !m.Plain() {
		t.Errorf("LRO runt: %+v", m)
	}
	if tl != (rxTally{good: 1, bad: 2, partial: 2, invalid: 1}) {
		t.Errorf("tally %+v", tl)
	}
}

// tcp6 is an Ethernet/IPv6/TCP frame with payload bytes and a partial
// TCP checksum (the pseudo header's sum, length included), as a guest
// hands it over with NEEDS_CSUM.
func tcp6(payload int) []byte {
	f := ethFrame(74+payload, 11)
	ip, tcp := f[14:54], f[54:74]
	copy(f[12:], []byte{0x86, 0xdd})
	copy(ip, []byte{0x60, 0, 0, 0, 0, 0, 6, 64})
	binary.BigEndian.PutUint16(ip[4:], uint16(20+payload))
	for i := 8; i < 40; i++ {
		ip[i] = 0
	}
	ip[8], ip[9], ip[23] = 0xfd, 0x00, 1   // fd00::1
	ip[24], ip[25], ip[39] = 0xfd, 0x00, 2 // fd00::2
	for i := range tcp {
		tcp[i] = 0
	}
	tcp[12], tcp[13] = 5<<4, 0x10
	binary.BigEndian.PutUint16(tcp[16:], fold(sum16(6+uint32(20+payload), ip[8:40])))
	return f
}

// udp4 is an Ethernet/IPv4/UDP frame with payload bytes and a partial UDP
// checksum (the pseudo header's sum), as a guest hands a USO super-frame
// over (the UDP length is the super-frame's).
func udp4(payload int) []byte {
	f := ethFrame(42+payload, 13)
	ip, udp := f[14:34], f[34:42]
	copy(f[12:], []byte{8, 0})
	copy(ip, []byte{0x45, 0, 0, 0, 0, 2, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[2:], uint16(28+payload))
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(0, ip)))
	copy(udp, []byte{0x30, 0x39, 0x10, 0xe1, 0, 0, 0, 0}) // 12345 -> 4321
	binary.BigEndian.PutUint16(udp[4:], uint16(8+payload))
	binary.BigEndian.PutUint16(udp[6:], fold(sum16(17+uint32(8+payload), ip[12:20])))
	return f
}
