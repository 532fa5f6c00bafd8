package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// Frame layout of the generator's TCP/IPv4 segments: Ethernet, IPv4
// without options, TCP without options, payload.
const (
	EthLen = 14
	IPLen  = 20
	TCPLen = 20
	HdrLen = EthLen + IPLen + TCPLen
	// MSS is the segment size the frames ask a segmenting backend (or
	// the receiving stack) for: a 1500-byte MTU's with TCP timestamps.
	MSS = 1448
	// SegFrameLen is the frame of one "64 KiB segment": 45 MSS of
	// payload and the headers, 65214 bytes, the largest a Linux guest's
	// TCP sends (its GSO limit is 65536 bytes less room for headers,
	// rounded down to whole MSS). A 65536-byte frame would be more than
	// rte_vhost can dequeue into one buffer (an external mbuf buffer is
	// limited to 65535 bytes with its headroom and shared info), which
	// OVS's userspace TSO requires: OVS would drop every one.
	SegFrameLen = HdrLen + 45*MSS
	// seqStride separates the sequence numbers of the template frames,
	// so a byte's sequence number names its frame and offset.
	seqStride = 1 << 20
)

// Flow is the addressing every frame of a run shares; frame i uses
// source port SrcPort+i.
type Flow struct {
	SrcMAC, DstMAC net.HardwareAddr
	SrcIP, DstIP   [4]byte
	SrcPort        uint16
	DstPort        uint16
}

// DefaultFlow is port A (02:..:0a, 10.77.0.1) to port B (02:..:0b,
// 10.77.0.2), the MACs the bench gives the generator's ports.
func DefaultFlow() Flow {
	return Flow{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x0a}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x0b},
		SrcIP: [4]byte{10, 77, 0, 1}, DstIP: [4]byte{10, 77, 0, 2}, SrcPort: 40000, DstPort: 5001,
	}
}

// PayloadByte is the payload byte at TCP sequence number seq: every byte
// of every frame (and of every segment a backend cuts from it) can be
// checked knowing only its sequence number.
func PayloadByte(seq uint32) byte { return byte((seq * 2654435761) >> 24) }

// BuildSegment returns frame i of a run: a TCP/IPv4 segment of frameLen
// bytes (headers included) from f, sequence number i*seqStride, payload
// PayloadByte of each byte's sequence number. The IPv4 checksum is
// complete; the TCP checksum field holds the folded pseudo-header sum
// (with the segment's length, not complemented), what the virtio spec's
// VIRTIO_NET_HDR_F_NEEDS_CSUM asks for: whoever completes the checksum
// sums from the TCP header to the end and stores the complement.
func BuildSegment(f Flow, i int, frameLen int) ([]byte, error) {
	if frameLen < HdrLen+1 || frameLen-EthLen > 0xffff {
		return nil, fmt.Errorf("frame of %d bytes: want %d..%d", frameLen, HdrLen+1, 0xffff+EthLen)
	}
	b := make([]byte, frameLen)
	copy(b[0:6], f.DstMAC)
	copy(b[6:12], f.SrcMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[EthLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(frameLen-EthLen))
	binary.BigEndian.PutUint16(ip[4:], uint16(i))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8], ip[9] = 64, 6
	copy(ip[12:16], f.SrcIP[:])
	copy(ip[16:20], f.DstIP[:])
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum(ip[:IPLen], 0)))
	tcp := ip[IPLen:]
	binary.BigEndian.PutUint16(tcp[0:], f.SrcPort+uint16(i))
	binary.BigEndian.PutUint16(tcp[2:], f.DstPort)
	seq := uint32(i) * seqStride
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = TCPLen / 4 << 4
	tcp[13] = 0x18 // PSH, ACK
	binary.BigEndian.PutUint16(tcp[14:], 0xffff)
	for k, p := range tcp[TCPLen:] {
		p = PayloadByte(seq + uint32(k))
		tcp[TCPLen+k] = p
	}
	binary.BigEndian.PutUint16(tcp[16:], fold(pseudo(f.SrcIP, f.DstIP, len(tcp))))
	return b, nil
}

// pseudo is the unfolded sum of the TCP/IPv4 pseudo-header for a TCP
// segment (header and payload) of n bytes.
func pseudo(src, dst [4]byte, n int) uint32 {
	s := sum(src[:], 0)
	s = sum(dst[:], s)
	return s + 6 + uint32(n)
}

// sum adds b as big-endian 16-bit words to s (one's complement, unfolded).
func sum(b []byte, s uint32) uint32 {
	n := len(b) &^ 1
	for i := 0; i < n; i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)&1 == 1 {
		s += uint32(b[n]) << 8
	}
	return s
}

// fold folds s into 16 bits.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// CsumState says what the TCP checksum of a received frame holds.
type CsumState int

const (
	// CsumPartial: the pseudo-header sum, still to be completed (the
	// frame kept VIRTIO_NET_HDR_F_NEEDS_CSUM).
	CsumPartial CsumState = iota
	// CsumFull: a complete, valid checksum (someone completed it).
	CsumFull
	// CsumPartialNoLen: a pseudo-header sum without the length, the
	// convention of NICs' TSO (DPDK's rte_net_intel_cksum_prepare writes
	// it for RTE_MBUF_F_TX_TCP_SEG, and rte_vhost uses that on enqueue).
	// Completing it from csum_start gives a wrong checksum; a receiver
	// that delivers the segment locally never looks.
	CsumPartialNoLen
)

// Parsed is what Check learnt from a received frame.
type Parsed struct {
	// Payload is the TCP payload length; Seq its first sequence number.
	Payload int
	Seq     uint32
	Csum    CsumState
}

// Errors of Check.
var (
	ErrShort    = errors.New("frame shorter than its headers")
	ErrHeader   = errors.New("header differs from the one sent")
	ErrIPLength = errors.New("IPv4 total length does not match the frame")
	ErrIPCsum   = errors.New("bad IPv4 header checksum")
	ErrTCPCsum  = errors.New("TCP checksum neither complete nor the partial one sent")
	ErrPayload  = errors.New("payload byte differs from the one sent")
)

// Check verifies a received frame against flow f: addresses and ports of
// one of the n template frames, IPv4 length and checksum, the payload
// bytes by their sequence numbers, and the TCP checksum, which must be
// either partial (partialOK: the receiver was told so; the pseudo-header
// sum sent, or one without the length) or complete and valid. It works as well for a whole frame as for one
// segment a backend cut from it.
func Check(f Flow, b []byte, n int, partialOK bool) (Parsed, error) {
	var p Parsed
	if len(b) < HdrLen {
		return p, ErrShort
	}
	if string(b[0:6]) != string(f.DstMAC) || string(b[6:12]) != string(f.SrcMAC) || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return p, fmt.Errorf("%w: Ethernet", ErrHeader)
	}
	ip := b[EthLen:]
	if ip[0] != 0x45 || ip[9] != 6 || [4]byte(ip[12:16]) != f.SrcIP || [4]byte(ip[16:20]) != f.DstIP {
		return p, fmt.Errorf("%w: IPv4", ErrHeader)
	}
	if int(binary.BigEndian.Uint16(ip[2:])) != len(b)-EthLen {
		return p, fmt.Errorf("%w: %d for %d bytes", ErrIPLength, binary.BigEndian.Uint16(ip[2:]), len(b)-EthLen)
	}
	if fold(sum(ip[:IPLen], 0)) != 0xffff {
		return p, ErrIPCsum
	}
	tcp := ip[IPLen:]
	sp := binary.BigEndian.Uint16(tcp[0:])
	if sp < f.SrcPort || int(sp-f.SrcPort) >= n || binary.BigEndian.Uint16(tcp[2:]) != f.DstPort || tcp[12] != TCPLen/4<<4 {
		return p, fmt.Errorf("%w: TCP", ErrHeader)
	}
	p.Seq = binary.BigEndian.Uint32(tcp[4:])
	if p.Seq/seqStride != uint32(sp-f.SrcPort) {
		return p, fmt.Errorf("%w: sequence %d is not frame %d's", ErrHeader, p.Seq, sp-f.SrcPort)
	}
	pay := tcp[TCPLen:]
	p.Payload = len(pay)
	for k, v := range pay {
		if v != PayloadByte(p.Seq+uint32(k)) {
			return p, fmt.Errorf("%w: at sequence %d", ErrPayload, p.Seq+uint32(k))
		}
	}
	ph := pseudo(f.SrcIP, f.DstIP, len(tcp))
	switch {
	case fold(sum(tcp, ph)) == 0xffff:
		p.Csum = CsumFull
	case partialOK && binary.BigEndian.Uint16(tcp[16:]) == fold(ph):
		p.Csum = CsumPartial
	case partialOK && binary.BigEndian.Uint16(tcp[16:]) == fold(pseudo(f.SrcIP, f.DstIP, 0)):
		p.Csum = CsumPartialNoLen
	default:
		return p, ErrTCPCsum
	}
	return p, nil
}
