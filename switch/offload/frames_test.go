package offload

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// frameSpec describes a synthetic super-frame for tests.
type frameSpec struct {
	v6       bool
	vlan     bool
	udp      bool
	ipOpts   int  // IPv4 option bytes (NOPs), a multiple of 4
	hopByHop bool // an 8-byte IPv6 hop-by-hop header
	payload  int
	mss      uint16
	tcpFlags byte // default ACK|PSH|FIN|CWR
	ecn      bool // set GSOECN
	seed     uint64
}

// build returns a super-frame as a guest would send it (IP header checksum
// done, L4 checksum field holding the pseudo header's partial sum) and its
// virtio-net header.
func (sp frameSpec) build() ([]byte, Header) {
	f := []byte{0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1}
	if sp.vlan {
		f = append(f, 0x81, 0x00, 0x00, 0x07)
	}
	proto := byte(protoTCP)
	l4hdr := 32 // 20 + NOP NOP timestamps
	if sp.udp {
		proto, l4hdr = protoUDP, 8
	}
	l4len := l4hdr + sp.payload
	l3 := len(f) + 2
	var pseudo []byte
	if sp.v6 {
		f = append(f, 0x86, 0xdd)
		ext := 0
		next := proto
		if sp.hopByHop {
			ext, next = 8, ipv6HopByHop
		}
		ip := make([]byte, 40+ext)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(ext+l4len))
		ip[6], ip[7] = next, 64
		copy(ip[8:], []byte{0xfd, 0x77, 15: 1})
		copy(ip[24:], []byte{0xfd, 0x77, 15: 2})
		if sp.hopByHop {
			copy(ip[40:], []byte{proto, 0, 1, 4, 0, 0, 0, 0})
		}
		f = append(f, ip...)
		pseudo = append(append([]byte(nil), ip[8:40]...), 0, 0, byte(l4len>>8), byte(l4len), 0, 0, 0, proto)
	} else {
		f = append(f, 0x08, 0x00)
		ip := make([]byte, 20+sp.ipOpts)
		ip[0] = 0x40 | byte(len(ip)/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+l4len))
		binary.BigEndian.PutUint16(ip[4:], 0xfff0) // wraps during segmentation
		ip[6] = 0x40                               // DF
		ip[8], ip[9] = 64, proto
		copy(ip[12:], []byte{10, 77, 0, 1, 10, 77, 0, 2})
		for i := 20; i < len(ip); i++ {
			ip[i] = 1 // NOP
		}
		binary.BigEndian.PutUint16(ip[10:], ^Sum(ip))
		f = append(f, ip...)
		pseudo = append(append([]byte(nil), ip[12:20]...), 0, proto, byte(l4len>>8), byte(l4len))
	}
	l4 := len(f)
	if sp.udp {
		f = binary.BigEndian.AppendUint16(f, 40000)
		f = binary.BigEndian.AppendUint16(f, 7715)
		f = binary.BigEndian.AppendUint16(f, uint16(l4len))
		f = binary.BigEndian.AppendUint16(f, Sum(pseudo))
	} else {
		flags := sp.tcpFlags
		if flags == 0 {
			flags = 0x10 | tcpPSH | tcpFIN | tcpCWR
		}
		f = binary.BigEndian.AppendUint16(f, 40000)
		f = binary.BigEndian.AppendUint16(f, 7715)
		f = binary.BigEndian.AppendUint32(f, 0xffffff00) // wraps too
		f = binary.BigEndian.AppendUint32(f, 2000)
		f = append(f, 8<<4, flags)
		f = binary.BigEndian.AppendUint16(f, 512)
		f = binary.BigEndian.AppendUint16(f, Sum(pseudo))
		f = append(f, 0, 0, 1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8)
	}
	rng := rand.New(rand.NewPCG(sp.seed, 15))
	for range sp.payload {
		f = append(f, byte(rng.Uint32()))
	}
	h := Header{Flags: FlagNeedsCsum, HdrLen: uint16(l4 + l4hdr), GSOSize: sp.mss, CsumStart: uint16(l4), CsumOffset: 16}
	switch {
	case sp.udp:
		h.GSOType, h.CsumOffset = GSOUDPL4, 6
	case sp.v6:
		h.GSOType = GSOTCPv6
	default:
		h.GSOType = GSOTCPv4
	}
	if sp.ecn {
		h.GSOType |= GSOECN
	}
	_ = l3
	return f, h
}

// l4Verifies reports whether a frame's IPv4 header checksum (if any) and
// L4 checksum (pseudo header included) verify.
func l4Verifies(frame []byte, l Layout) bool {
	var acc uint64
	l4len := len(frame) - l.L4Off
	if l.IPv6 {
		acc = sum(0, frame[l.L3Off+8:l.L3Off+40])
	} else {
		if fold(sum(0, frame[l.L3Off:l.L4Off])) != 0xffff {
			return false
		}
		acc = sum(0, frame[l.L3Off+12:l.L3Off+20])
	}
	acc = addBE16(addBE16(acc, uint16(l.L4Proto)), uint16(l4len))
	return fold(sum(acc, frame[l.L4Off:])) == 0xffff
}

// checkSegments segments frame into buffers of exactly MaxSegmentLen
// bytes inside larger ones, and checks that nothing is written past them,
// that each segment is a well-formed frame with verifying checksums, and
// that the payloads add up to the super-frame's. It returns the segments.
func checkSegments(t testing.TB, h *Header, frame []byte, l Layout) [][]byte {
	t.Helper()
	var s Segmenter
	if err := s.Reset(h, frame, l); err != nil {
		t.Fatalf("reset: %v", err)
	}
	max := s.MaxSegmentLen()
	if max > l.Payload+int(h.GSOSize) {
		t.Fatalf("MaxSegmentLen %d > headers %d + gso_size %d", max, l.Payload, h.GSOSize)
	}
	var segs [][]byte
	var payload []byte
	for {
		buf := make([]byte, max+64)
		for i := range buf {
			buf[i] = 0xa5
		}
		n, err := s.Next(buf[:max])
		if err != nil {
			if n != 0 {
				t.Fatalf("next: %v with n=%d", err, n)
			}
			if err.Error() != "EOF" {
				t.Fatalf("next: %v", err)
			}
			break
		}
		for i := n; i < len(buf); i++ {
			if buf[i] != 0xa5 {
				t.Fatalf("segment %d: byte %d written beyond its %d bytes", len(segs), i, n)
			}
		}
		seg := buf[:n]
		sl, r := parse(seg)
		if r != ReasonOK || sl.IPLenEnd != n || sl.Payload != l.Payload || sl.L4Proto != l.L4Proto {
			t.Fatalf("segment %d: parse %v, ip end %d of %d", len(segs), r, sl.IPLenEnd, n)
		}
		if n-sl.Payload > int(h.GSOSize) || n == sl.Payload {
			t.Fatalf("segment %d: %d payload bytes, gso_size %d", len(segs), n-sl.Payload, h.GSOSize)
		}
		if !l4Verifies(seg, sl) {
			t.Fatalf("segment %d: checksum does not verify", len(segs))
		}
		payload = append(payload, seg[sl.Payload:]...)
		segs = append(segs, seg)
	}
	if len(segs) != s.Segments() || len(segs) > MaxSegments {
		t.Fatalf("%d segments, Segments() %d", len(segs), s.Segments())
	}
	if string(payload) != string(frame[l.Payload:]) {
		t.Fatalf("payloads (%d bytes) do not add up to the super-frame's (%d)", len(payload), len(frame)-l.Payload)
	}
	return segs
}
