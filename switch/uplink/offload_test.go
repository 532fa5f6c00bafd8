//go:build cgo

package uplink

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"

	vswitch "github.com/vhostd/vhostd/switch"
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
