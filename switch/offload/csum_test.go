package offload

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// refSum is RFC 1071 done the plain way: big-endian 16-bit words.
func refSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestSumKnown(t *testing.T) {
	// RFC 1071, section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
	if got := Sum([]byte{0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0xf7}); got != 0xddf2 {
		t.Fatalf("Sum = %#x, want 0xddf2", got)
	}
	if Sum(nil) != 0 {
		t.Fatal("Sum(nil) != 0")
	}
}

func TestSumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70000)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	// All-0xff data drives every carry path.
	ff := make([]byte, 70000)
	for i := range ff {
		ff[i] = 0xff
	}
	for _, b := range [][]byte{buf, ff} {
		for n := 0; n < 300; n++ {
			for off := 0; off < 3; off++ {
				if got, want := Sum(b[off:off+n]), refSum(b[off:off+n]); got != want {
					t.Fatalf("len %d off %d: %#x, want %#x", n, off, got, want)
				}
			}
		}
		for _, n := range []int{1500, 65535, 65536, 69999} {
			if got, want := Sum(b[:n]), refSum(b[:n]); got != want {
				t.Fatalf("len %d: %#x, want %#x", n, got, want)
			}
		}
	}
	// An accumulator at the top must not lose its carry: all ones is
	// ones-complement zero, so adding the word 0x0001 (LE domain 0x0100)
	// gives 0x0100.
	if got := fold(sum(^uint64(0), []byte{0, 1})); got != 0x0100 {
		t.Fatalf("carry lost: %#x", got)
	}
}

func TestCompleteChecksum(t *testing.T) {
	sp := frameSpec{payload: 700, mss: 1448, seed: 3}
	frame, h := sp.build()
	l, r := parse(frame)
	if r != ReasonOK {
		t.Fatal(r)
	}
	// The field holds the pseudo header's partial sum: completing gives
	// a frame whose checksum verifies.
	if !CompleteChecksum(frame, int(h.CsumStart), int(h.CsumOffset)) {
		t.Fatal("refused")
	}
	if !l4Verifies(frame, l) {
		t.Fatal("completed checksum does not verify")
	}
	frame[len(frame)-1] ^= 1
	if l4Verifies(frame, l) {
		t.Fatal("verifies after a bit flip")
	}
	// Bounds: the field must lie inside the frame; nothing is touched.
	small := []byte{1, 2, 3, 4}
	for _, c := range [][2]int{{3, 0}, {2, 1}, {0, 3}, {5, 0}, {-1, 0}, {0, -1}, {1 << 20, 0}} {
		if CompleteChecksum(small, c[0], c[1]) {
			t.Fatalf("start %d offset %d accepted on 4 bytes", c[0], c[1])
		}
	}
	if string(small) != "\x01\x02\x03\x04" {
		t.Fatal("refused call wrote")
	}
	if !CompleteChecksum(small, 2, 0) || !CompleteChecksum(small, 0, 2) {
		t.Fatal("field at the very end refused")
	}
	if n := testing.AllocsPerRun(100, func() { CompleteChecksum(frame, int(h.CsumStart), int(h.CsumOffset)) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

func TestChecksumSegsMatchesComplete(t *testing.T) {
	frame := make([]byte, 1001)
	for i := range frame {
		frame[i] = byte(i*7 + 3)
	}
	for _, start := range []int{0, 1, 14, 34, 35} {
		want := append([]byte(nil), frame...)
		if !CompleteChecksum(want, start, 6) {
			t.Fatal("complete")
		}
		wv := uint16(want[start+6]) | uint16(want[start+7])<<8
		for _, cuts := range [][]int{{}, {1}, {3, 4, 5}, {500}, {35, 36, 999}, {2, 7, 8, 9, 10, 11}} {
			var segs [][]byte
			prev := 0
			for _, c := range cuts {
				segs = append(segs, frame[prev:c])
				prev = c
			}
			segs = append(segs, frame[prev:])
			got, ok := ChecksumSegs(segs, start)
			if !ok || got != wv {
				t.Fatalf("start %d cuts %v: %#04x %v, want %#04x", start, cuts, got, ok, wv)
			}
		}
	}
	if _, ok := ChecksumSegs([][]byte{frame}, len(frame)+1); ok {
		t.Fatal("start beyond the frame accepted")
	}
}

// TestChecksumZeroSentAsOnes: a sum that completes to 0 is stored as
// 0xffff by both routines (a UDP checksum of 0 means "none", which an
// IPv6 receiver drops), and the frame still verifies.
func TestChecksumZeroSentAsOnes(t *testing.T) {
	// Six bytes from start: a word w, the checksum field (0), a word
	// chosen so the sum is all ones: the complement, 0, is what a plain
	// fold would store.
	frame := []byte{0x12, 0x34, 0, 0, 0xed, 0xcb}
	if !CompleteChecksum(frame, 0, 2) {
		t.Fatal("refused")
	}
	if frame[2] != 0xff || frame[3] != 0xff {
		t.Fatalf("stored %#02x%02x, want 0xffff", frame[2], frame[3])
	}
	if got := fold(sum(0, frame)); got != 0xffff {
		t.Fatalf("frame sums to %#04x, want 0xffff (verifies)", got)
	}
	frame[2], frame[3] = 0, 0
	for _, segs := range [][][]byte{{frame}, {frame[:1], frame[1:5], frame[5:]}} {
		if v, ok := ChecksumSegs(segs, 0); !ok || v != 0xffff {
			t.Fatalf("ChecksumSegs over %d segments: %#04x %v, want 0xffff", len(segs), v, ok)
		}
	}
}
