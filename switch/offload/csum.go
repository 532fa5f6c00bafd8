package offload

import (
	"encoding/binary"
	"math/bits"
)

// The Internet checksum (RFC 1071) is a ones-complement sum of 16-bit
// words, which is byte-order independent: summing little-endian words and
// swapping the folded result gives the big-endian sum. So the loops below
// add little-endian 64-bit words with an add-with-carry chain, eight bytes
// per add, and the callers write folded results back little-endian, which
// is the swap for free. An accumulator in this "LE domain" is what sum
// returns and fold takes.

// sum adds b to the LE-domain accumulator acc, as if b started at an even
// offset of the checksummed region. Carries are kept in a side counter and
// added back in fold, so acc never silently wraps.
func sum(acc uint64, b []byte) uint64 {
	var carry, c uint64
	for len(b) >= 64 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:]), 0)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[32:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[40:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[48:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[56:]), c)
		carry += c
		b = b[64:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b), 0)
		carry += c
		b = b[8:]
	}
	// Tail: a 16-bit word may be added in any 16-bit lane (2^16 = 1 in
	// ones-complement arithmetic), so the rest goes in at the bottom. A
	// last odd byte is the high byte of a zero-padded big-endian word, the
	// low byte of a little-endian one.
	var t uint64
	if len(b) >= 4 {
		t += uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		t += uint64(binary.LittleEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		t += uint64(b[0])
	}
	acc, c = bits.Add64(acc, t, 0)
	carry += c
	acc, c = bits.Add64(acc, carry, 0)
	return acc + c // acc <= 2^64-2 whenever c == 1, so this cannot wrap
}

// fold reduces an LE-domain accumulator to 16 bits with end-around carry.
func fold(acc uint64) uint16 {
	s := (acc & 0xffffffff) + (acc >> 32) // at most 33 bits
	s = (s & 0xffffffff) + (s >> 32)      // at most 32 bits
	s = (s & 0xffff) + (s >> 16)          // at most 17 bits
	s = (s & 0xffff) + (s >> 16)
	return uint16(s)
}

// addBE16 adds a big-endian 16-bit value (a length or a protocol number of
// a pseudo header) to an LE-domain accumulator.
func addBE16(acc uint64, v uint16) uint64 {
	return acc + uint64(bits.ReverseBytes16(v))
}

// Sum returns the folded ones-complement sum of b (RFC 1071), in network
// byte order and not complemented: the checksum of b is ^Sum(b).
func Sum(b []byte) uint16 {
	return bits.ReverseBytes16(fold(sum(0, b)))
}

// CompleteChecksum does in software what VIRTIO_NET_HDR_F_NEEDS_CSUM asks
// of a device: the 16-bit field at start+offset holds the partial sum of
// the pseudo header; the ones-complement sum from start to the end of frame
// (that field included) is folded, complemented and stored there. It
// reports false, touching nothing, if the field is not inside frame.
//
// A result of 0 is stored as 0xffff, as Linux's skb_checksum_help does:
// for UDP a 0 would mean "no checksum" (RFC 768), which IPv6 receivers
// drop (RFC 8200, 8.1); for TCP both encode the same sum.
func CompleteChecksum(frame []byte, start, offset int) bool {
	if start < 0 || offset < 0 || start > len(frame) || offset > len(frame)-start-2 {
		return false
	}
	binary.LittleEndian.PutUint16(frame[start+offset:], nonZero(^fold(sum(0, frame[start:]))))
	return true
}

// nonZero returns v, or 0xffff (the other encoding of ones-complement
// zero) for 0.
func nonZero(v uint16) uint16 {
	if v == 0 {
		return 0xffff
	}
	return v
}

// ChecksumSegs returns what CompleteChecksum would store for a frame
// scattered over segs, with the same start (the value is written
// little-endian at start+offset, as CompleteChecksum does), without
// writing anything: the switch sums the sender's buffers and patches the
// receiver's copy. It reports false if start is beyond the frame.
func ChecksumSegs(segs [][]byte, start int) (uint16, bool) {
	var acc, c uint64
	odd := false // the next byte is at an odd offset from start
	for _, s := range segs {
		if start >= len(s) {
			start -= len(s)
			continue
		}
		s = s[start:]
		start = 0
		v := sum(0, s)
		if odd {
			// Bytes at odd offsets are the high bytes of LE-domain words.
			v = uint64(bits.ReverseBytes16(fold(v)))
		}
		acc, c = bits.Add64(acc, v, 0)
		acc += c
		if len(s)&1 == 1 {
			odd = !odd
		}
	}
	if start > 0 {
		return 0, false
	}
	return nonZero(^fold(acc)), true
}
