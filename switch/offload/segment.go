package offload

import (
	"encoding/binary"
	"errors"
	"io"
)

// Errors of the segmenter: sentinels, so the data path does not allocate.
var (
	// ErrShortBuffer: the output buffer cannot hold the next segment
	// (MaxSegmentLen bytes always suffice).
	ErrShortBuffer = errors.New("offload: segment buffer too short")
	// ErrNotSegmentable: Reset was given a frame that Validate did not
	// pass as a TCP or USO super-frame (UFO is not segmented).
	ErrNotSegmentable = errors.New("offload: frame cannot be segmented")
)

// TCP flags the segmenter rewrites.
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// Segmenter cuts a TCP (TSO) or UDP (USO) super-frame into frames of at
// most gso_size bytes of payload, each a complete frame with its own IP
// length, IPv4 ID and header checksum, TCP sequence number and flags or UDP
// length, and a full L4 checksum (pseudo header included), as Linux's
// software GSO does. Output goes into buffers the caller passes to Next,
// one segment per call; nothing is allocated. A zero Segmenter is ready
// for Reset, and may be reused for frame after frame.
type Segmenter struct {
	frame   []byte
	l       Layout
	mss     int
	off     int    // next payload byte of frame
	seg     int    // index of the next segment
	addrSum uint64 // LE-domain sum of the pseudo header's addresses
	seq     uint32 // TCP sequence number of the super-frame
	id      uint16 // IPv4 ID of the super-frame
}

// Reset prepares s to segment frame, whose header h passed Validate with
// layout l. frame must not change until the last Next.
func (s *Segmenter) Reset(h *Header, frame []byte, l Layout) error {
	gso := h.GSO()
	tcp := gso == GSOTCPv4 || gso == GSOTCPv6
	// Re-check what the loop below relies on, so a caller that skipped
	// Validate gets an error, not a panic or a write out of bounds.
	if !(tcp && l.L4Proto == protoTCP || gso == GSOUDPL4 && l.L4Proto == protoUDP) ||
		h.GSOSize == 0 || l.L3Off < 14 || l.L4Off < l.L3Off+20 || l.Payload <= l.L4Off ||
		l.Payload >= len(frame) || (l.L4Proto == protoTCP && l.Payload < l.L4Off+20) ||
		(l.L4Proto == protoUDP && l.Payload != l.L4Off+8) || (l.IPv6 && l.L4Off < l.L3Off+40) {
		*s = Segmenter{}
		return ErrNotSegmentable
	}
	*s = Segmenter{frame: frame, l: l, mss: int(h.GSOSize), off: l.Payload}
	if l.IPv6 {
		s.addrSum = sum(0, frame[l.L3Off+8:l.L3Off+40])
	} else {
		s.addrSum = sum(0, frame[l.L3Off+12:l.L3Off+20])
		s.id = binary.BigEndian.Uint16(frame[l.L3Off+4:])
	}
	if l.L4Proto == protoTCP {
		s.seq = binary.BigEndian.Uint32(frame[l.L4Off+4:])
	}
	return nil
}

// Segments returns how many segments the frame yields in all.
func (s *Segmenter) Segments() int {
	if s.frame == nil {
		return 0
	}
	return (len(s.frame) - s.l.Payload + s.mss - 1) / s.mss
}

// MaxSegmentLen returns the length of the longest segment: a buffer of
// that size always takes the next one.
func (s *Segmenter) MaxSegmentLen() int {
	if s.frame == nil {
		return 0
	}
	return s.l.Payload + min(s.mss, len(s.frame)-s.l.Payload)
}

// Next writes the next segment at the start of dst and returns its length.
// It returns io.EOF when every segment has been written, and ErrShortBuffer
// (writing nothing) when dst is too short for the segment.
func (s *Segmenter) Next(dst []byte) (int, error) {
	if s.frame == nil || s.off >= len(s.frame) {
		return 0, io.EOF
	}
	l := &s.l
	plen := min(s.mss, len(s.frame)-s.off)
	n := l.Payload + plen
	if len(dst) < n {
		return 0, ErrShortBuffer
	}
	dst = dst[:n]
	copy(dst, s.frame[:l.Payload])
	copy(dst[l.Payload:], s.frame[s.off:s.off+plen])
	first := s.seg == 0
	last := s.off+plen == len(s.frame)

	ip := dst[l.L3Off:l.L4Off]
	if l.IPv6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(n-l.L3Off-40))
	} else {
		// IDs increase per segment from the super-frame's, as Linux does
		// for a frame without a fixed ID.
		binary.BigEndian.PutUint16(ip[2:], uint16(n-l.L3Off))
		binary.BigEndian.PutUint16(ip[4:], s.id+uint16(s.seg))
		ip[10], ip[11] = 0, 0
		binary.LittleEndian.PutUint16(ip[10:], ^fold(sum(0, ip)))
	}

	l4 := dst[l.L4Off:]
	l4len := len(l4)
	if l.L4Proto == protoTCP {
		binary.BigEndian.PutUint32(l4[4:], s.seq+uint32(s.off-l.Payload))
		// FIN and PSH belong to the end of the data, CWR to its start.
		if !last {
			l4[13] &^= tcpFIN | tcpPSH
		}
		if !first {
			l4[13] &^= tcpCWR
		}
		l4[16], l4[17] = 0, 0
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4len))
		l4[6], l4[7] = 0, 0
	}
	acc := addBE16(addBE16(s.addrSum, uint16(l.L4Proto)), uint16(l4len))
	c := ^fold(sum(acc, l4))
	if l.L4Proto == protoTCP {
		binary.LittleEndian.PutUint16(l4[16:], c)
	} else {
		if c == 0 { // RFC 768: a computed 0 is sent as all ones
			c = 0xffff
		}
		binary.LittleEndian.PutUint16(l4[6:], c)
	}
	s.off += plen
	s.seg++
	return n, nil
}
