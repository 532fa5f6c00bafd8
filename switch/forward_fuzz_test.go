package vswitch

import (
	"strings"
	"testing"

	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// FuzzForward has a guest transmit chains of the fuzzer's making through
// the switch: any split of the virtio-net header and the frame over one to
// four descriptors (empty ones, a header alone or cut in two included),
// any header (offload flags, gso_type and the rest, on a port that
// negotiated the host offloads), frames of 0 to 2040 bytes, plain or
// IPv4/TCP, to a known peer, another, the broadcast address or the sender
// itself; on split or packed rings; into receive buffers of one size
// from 16 bytes to 4 KiB (merged, for b) and into chains of one to three
// descriptors whose first may be too short for the virtio-net header
// (for c); from a sender pinned to its address (mac=) or not, with frames
// from that address and from another. Nothing may panic; every chain the guest sent is consumed and
// counted once on the sender (received, or dropped by reason); each frame
// the peer that takes every offload receives is one the guest sent it
// (from the pinned address only, for a pinned sender),
// and each peer's counters agree with what it received.
func FuzzForward(f *testing.F) {
	// A frame to b, then a chain holding only its header (the input
	// that crashed vhostd), then the header cut across two descriptors.
	f.Add(false, false, uint8(127), uint16(2047), []byte{0x00, 8, 0x00, 0x00, 0, 0x00, 0x01, 0, 0x00, 6})
	f.Add(true, false, uint8(127), uint16(2047), []byte{0x00, 8, 0x00, 0x00, 0, 0x00, 0x01, 0, 0x00, 6})
	// A TCP frame with NEEDS_CSUM to b, split at its middle, then a
	// broadcast with a GSO header whose gso_size is 0.
	f.Add(false, false, uint8(3), uint16(5|2<<11), []byte{0x01, 20, 0x03, 1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 128,
		0x09, 100, 0x03, 1, 1, 54, 0, 0, 0, 34, 0, 16, 0})
	// Frames to every destination, in four descriptors each.
	f.Add(true, false, uint8(0), uint16(11|1<<11), []byte{0x03, 9, 0, 10, 20, 200, 0x07, 9, 0, 0, 0, 0, 0x0b, 9, 0, 255, 255, 255, 0x0f, 9, 0, 1, 2, 3})

	// A pinned sender: frames from its address (split after 9 bytes, over
	// three descriptors) and from another.
	f.Add(false, true, uint8(127), uint16(2047), []byte{0x02, 8, 0x00, 0x00, 9, 0x00, 8, 0x04, 0x08, 8, 0x00})
	f.Fuzz(func(t *testing.T, packed, pinned bool, bBuf uint8, cShape uint16, data []byte) {
		s := newTestSwitch(t)
		end := func(name string, base, feat uint64, mrg bool) *vmEnd {
			var e *vmEnd
			if packed {
				e = newPackedVMEnd(t, s, name, base, 12, mrg)
			} else {
				e = newVMEnd(t, s, name, base, 12, mrg)
			}
			r := *e.port.rings.Load()
			r.Features = feat
			e.port.Publish(&r)
			return e
		}
		a := end("a", 0, hostOffloads, true)
		if pinned {
			if err := s.secure(a.idx, PortSecurity{Mode: FixedMAC, MAC: macN(0xa)}); err != nil {
				t.Fatal(err)
			}
		}
		b := end("b", 0x100000000, guestOffloads, true)
		c := end("c", 0x200000000, 0, false)
		b.anySend(ethFrame(0xa, 0xb, 60), 60)
		c.anySend(ethFrame(0xa, 0xc, 60), 60)
		a.anyPost(4, 2048)
		pump(s, b, c)
		// b's buffers, merged: 16 bytes to 4 KiB, each one descriptor.
		bSize := 16 * (1 + int(bBuf))
		// c's chains: a first descriptor of 1 to 2048 bytes, then up to
		// two of 2048.
		cDescs := 1 + int(cShape>>11)%3
		cChain := []virtqueuetest.Buf{{Write: true, WriteLen: 1 + int(cShape&0x7ff)}}
		for len(cChain) < cDescs {
			cChain = append(cChain, virtqueuetest.Buf{Write: true, WriteLen: 2048})
		}
		topUp := func() {
			if packed {
				for b.prx.Outstanding() < 200 {
					b.prx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: bSize}})
				}
				for c.prx.Outstanding() < 240/cDescs {
					c.prx.AddChain(cChain)
				}
				return
			}
			for b.rx.Outstanding() < 200 {
				b.rx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: bSize}})
			}
			for c.rx.Outstanding() < 240/cDescs {
				c.rx.AddChain(cChain)
			}
		}
		topUp()
		addChain, consumed := a.tx.AddChain, func() int { return int(a.tx.UsedIdx()) }
		if packed {
			n := 0
			addChain = a.ptx.AddChain
			consumed = func() int { n += len(a.ptx.CollectUsed()); return n }
		}

		toB := map[string]bool{}
		chains, descs := 0, 0
		for len(data) >= 3 && descs <= 256-4 {
			b0, b1, b2 := data[0], data[1], data[2]
			data = data[3:]
			ndesc := 1 + int(b0&3)
			dst := []byte{0xb, 0xc, 0xff, 0xa}[(b0>>2)&3]
			size := int(b1) * 8
			hdr := make([]byte, 12)
			if b2&1 != 0 && len(data) >= 10 {
				copy(hdr, data[:10]) // num_buffers stays 0
				data = data[10:]
			}
			src := byte(0xa)
			if b2&4 != 0 {
				src = 0xe // spoofed, when a is pinned
			}
			var frame []byte
			if b2&2 != 0 {
				frame = tcp4Frame(dst, src, size, uint32(chains))
			} else {
				frame = ethFrame(dst, src, size)
			}
			if dst == 0xff {
				copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			}
			// b may get any frame a may send: those to it, broadcasts,
			// and those to an address not learned yet (0xa, before a
			// sent from it), flooded.
			if !(pinned && src != 0xa) {
				toB[string(frame)] = true
			}
			whole := append(hdr, frame...)
			var bufs []virtqueuetest.Buf
			at := 0
			for i := 0; i < ndesc-1; i++ {
				cut := at
				if len(data) > 0 {
					cut = at + int(data[0])*(len(whole)-at)/255
					data = data[1:]
				}
				bufs = append(bufs, virtqueuetest.Buf{Data: whole[at:cut]})
				at = cut
			}
			bufs = append(bufs, virtqueuetest.Buf{Data: whole[at:]})
			addChain(bufs)
			chains++
			descs += ndesc
		}
		var gotB, gotC int
		for i := 0; i < 16 && consumed() != chains; i++ {
			pump(s, a)
			_, fs := b.frames(t)
			for _, fr := range fs {
				if !toB[string(fr)] {
					t.Fatalf("b received a frame a did not send it: %x", fr)
				}
			}
			gotB += len(fs)
			// Counted, not read: c's chains are not contiguous.
			if packed {
				gotC += len(c.prx.CollectUsed())
			} else {
				gotC += len(c.rx.CollectUsed())
			}
			topUp()
		}
		if used := consumed(); used != chains {
			t.Fatalf("vhostd consumed %d of the %d chains", used, chains)
		}
		st := a.port.Stats()
		accounted := st.RxPackets
		for name, n := range st.Drops {
			if name == "rx_runt" || name == "rx_too_many_segments" || name == "mtu_exceeded" || strings.HasPrefix(name, "rx_offload_") {
				accounted += n
			}
		}
		if accounted != uint64(chains) {
			t.Fatalf("a sent %d chains; counted %d received and %v dropped", chains, st.RxPackets, st.Drops)
		}
		// b and c's own frames above count once each on their side.
		if sb := b.port.Stats(); sb.TxPackets != uint64(gotB) {
			t.Fatalf("b received %d frames, its tx counter says %d", gotB, sb.TxPackets)
		}
		if sc := c.port.Stats(); sc.TxPackets != uint64(gotC) {
			t.Fatalf("c received %d frames, its tx counter says %d", gotC, sc.TxPackets)
		}
	})
}
