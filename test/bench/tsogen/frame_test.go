package main

import (
	"encoding/binary"
	"errors"
	"testing"
)

// complete stores the full TCP checksum in b, as a backend or receiver
// completing VIRTIO_NET_HDR_F_NEEDS_CSUM does: sum from csum_start (the
// TCP header, whose checksum field holds the pseudo-header sum) to the
// end, and store the complement.
func complete(b []byte) {
	tcp := b[EthLen+IPLen:]
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum(tcp, 0)))
}

// segment cuts frame b the way a segmenting backend does: MSS-sized
// payloads with the headers copied, IPv4 length and checksum and TCP
// sequence number and checksum redone.
func segment(f Flow, b []byte, mss int) [][]byte {
	var out [][]byte
	pay := b[HdrLen:]
	seq := binary.BigEndian.Uint32(b[EthLen+IPLen+4:])
	for off := 0; off < len(pay); off += mss {
		n := min(mss, len(pay)-off)
		s := append(append([]byte(nil), b[:HdrLen]...), pay[off:off+n]...)
		ip := s[EthLen:]
		binary.BigEndian.PutUint16(ip[2:], uint16(len(s)-EthLen))
		binary.BigEndian.PutUint16(ip[10:], 0)
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip[:IPLen], 0)))
		tcp := ip[IPLen:]
		binary.BigEndian.PutUint32(tcp[4:], seq+uint32(off))
		binary.BigEndian.PutUint16(tcp[16:], fold(pseudo(f.SrcIP, f.DstIP, len(tcp))))
		complete(s)
		out = append(out, s)
	}
	return out
}

func TestBuildSegmentHeaders(t *testing.T) {
	f := DefaultFlow()
	b, err := BuildSegment(f, 3, SegFrameLen)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != SegFrameLen {
		t.Fatalf("frame of %d bytes, want %d", len(b), SegFrameLen)
	}
	ip := b[EthLen:]
	if got := binary.BigEndian.Uint16(ip[2:]); got != SegFrameLen-EthLen {
		t.Errorf("IPv4 total length %d, want %d", got, SegFrameLen-EthLen)
	}
	if fold(sum(ip[:IPLen], 0)) != 0xffff {
		t.Error("IPv4 header checksum does not verify")
	}
	tcp := ip[IPLen:]
	if sp := binary.BigEndian.Uint16(tcp); sp != f.SrcPort+3 {
		t.Errorf("source port %d, want %d", sp, f.SrcPort+3)
	}
	// The partial checksum is the pseudo-header sum with the length:
	// 10.77.0.1 + 10.77.0.2 + proto 6 + TCP length 65502.
	want := fold(0x0a4d + 0x0001 + 0x0a4d + 0x0002 + 6 + uint32(SegFrameLen-EthLen-IPLen))
	if got := binary.BigEndian.Uint16(tcp[16:]); got != want {
		t.Errorf("partial TCP checksum %#x, want %#x", got, want)
	}
	if _, err := BuildSegment(f, 0, 0xffff+EthLen+1); err == nil {
		t.Error("a frame whose IPv4 length overflows was built")
	}
	if _, err := BuildSegment(f, 0, HdrLen); err == nil {
		t.Error("a frame without payload was built")
	}
}

func TestCheckWholeSegment(t *testing.T) {
	f := DefaultFlow()
	b, _ := BuildSegment(f, 5, SegFrameLen)
	p, err := Check(f, b, 8, true)
	if err != nil || p.Csum != CsumPartial || p.Payload != SegFrameLen-HdrLen || p.Seq != 5*seqStride {
		t.Fatalf("as sent: %+v, %v; want partial, %d bytes of payload at %d", p, err, SegFrameLen-HdrLen, 5*seqStride)
	}
	if _, err := Check(f, b, 8, false); !errors.Is(err, ErrTCPCsum) {
		t.Errorf("partial checksum where a complete one was due: %v, want ErrTCPCsum", err)
	}
	if _, err := Check(f, b, 5, true); !errors.Is(err, ErrHeader) {
		t.Errorf("frame 5 of 5 templates: %v, want ErrHeader", err)
	}
	c := append([]byte(nil), b...)
	complete(c)
	if p, err := Check(f, c, 8, false); err != nil || p.Csum != CsumFull {
		t.Errorf("completed: %+v, %v; want full", p, err)
	}
	c[len(c)-1] ^= 1
	if _, err := Check(f, c, 8, true); !errors.Is(err, ErrPayload) {
		t.Errorf("flipped last payload bit: %v, want ErrPayload", err)
	}
	nl := append([]byte(nil), b...)
	binary.BigEndian.PutUint16(nl[EthLen+IPLen+16:], fold(pseudo(f.SrcIP, f.DstIP, 0)))
	if p, err := Check(f, nl, 8, true); err != nil || p.Csum != CsumPartialNoLen {
		t.Errorf("pseudo-header sum without length: %+v, %v; want CsumPartialNoLen", p, err)
	}
}

func TestCheckRejectsDamage(t *testing.T) {
	f := DefaultFlow()
	b, _ := BuildSegment(f, 1, 4000)
	cases := []struct {
		name string
		mod  func([]byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:HdrLen-1] }, ErrShort},
		{"dst MAC", func(b []byte) []byte { b[0] ^= 1; return b }, ErrHeader},
		{"src IP", func(b []byte) []byte { b[EthLen+12] ^= 1; return b }, ErrHeader},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, ErrIPLength},
		{"IPv4 checksum", func(b []byte) []byte { b[EthLen+10] ^= 1; return b }, ErrIPCsum},
		{"dst port", func(b []byte) []byte { b[EthLen+IPLen+3] ^= 1; return b }, ErrHeader},
		{"sequence of another frame", func(b []byte) []byte { b[EthLen+IPLen+5] ^= 0x10; return b }, ErrHeader},
		{"payload", func(b []byte) []byte { b[HdrLen+100] ^= 0x80; return b }, ErrPayload},
		{"TCP checksum", func(b []byte) []byte { b[EthLen+IPLen+17] ^= 1; return b }, ErrTCPCsum},
	}
	for _, c := range cases {
		got := c.mod(append([]byte(nil), b...))
		if _, err := Check(f, got, 8, true); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestCheckSegments: the MSS-sized frames a segmenting backend cuts from
// a 64 KiB segment each pass, with complete checksums, and together
// carry its payload once.
func TestCheckSegments(t *testing.T) {
	f := DefaultFlow()
	b, _ := BuildSegment(f, 2, SegFrameLen)
	total := 0
	segs := segment(f, b, MSS)
	for i, s := range segs {
		p, err := Check(f, s, 8, false)
		if err != nil || p.Csum != CsumFull {
			t.Fatalf("segment %d: %+v, %v", i, p, err)
		}
		if p.Seq != 2*seqStride+uint32(total) {
			t.Fatalf("segment %d at sequence %d, want %d", i, p.Seq, 2*seqStride+uint32(total))
		}
		total += p.Payload
	}
	if total != SegFrameLen-HdrLen || len(segs) != (SegFrameLen-HdrLen+MSS-1)/MSS {
		t.Errorf("%d segments with %d payload bytes, want %d bytes", len(segs), total, SegFrameLen-HdrLen)
	}
}
