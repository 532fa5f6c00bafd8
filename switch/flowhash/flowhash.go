// Package flowhash computes the flow hash of an Ethernet frame, which
// vhostd uses to choose a multi-queue guest's receive queue: all frames of
// one flow land on one queue (no reordering inside a flow), and many flows
// spread over all the queues, so over the guest's vCPUs.
//
// The hash is symmetric: a frame and its reply (source and destination
// addresses and ports swapped) hash alike, so both directions of a
// connection meet the same queue number. It covers, in order of
// preference:
//   - IPv4 or IPv6 addresses, the protocol and the TCP, UDP or SCTP ports
//     (IPv6 only when the transport header follows the fixed header; IPv4
//     only for unfragmented packets: a fragment has no ports after the
//     first, so every fragment of a datagram hashes on the addresses);
//   - the IP addresses and protocol, for other IP packets;
//   - the Ethernet addresses and EtherType otherwise (ARP, non-IP).
//
// Up to two VLAN tags are skipped. It reads only inside the frame, never
// allocates, and costs a few nanoseconds: it is meant for the per-frame
// path. It is not Toeplitz (no key, not compatible with a NIC's RSS), and
// not meant to resist an attacker choosing flows to collide: the worst a
// guest can do with it is put its own flows on one of its peer's queues,
// which it can do anyway by sending one flow.
package flowhash

import (
	"encoding/binary"
	"math/bits"
)

// MaxHeader is how many bytes of a frame the hash may look at: Ethernet
// with two VLAN tags (22), an IPv6 header (40) and the 4 port bytes. A
// frame whose first segment is shorter has its headers gathered from the
// following segments.
const MaxHeader = 22 + 40 + 4

const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100 // 802.1Q
	etherTypeQinQ = 0x88a8 // 802.1ad

	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

// Of returns the flow hash of the frame held by segs, in order.
func Of(segs [][]byte) uint32 {
	if len(segs) == 0 {
		return 0
	}
	if len(segs[0]) >= MaxHeader || len(segs) == 1 {
		return Bytes(segs[0])
	}
	// The headers may span segments: gather them (a guest chooses its
	// buffer layout; most put the whole frame in one).
	var buf [MaxHeader]byte
	n := 0
	for _, s := range segs {
		n += copy(buf[n:], s)
		if n == len(buf) {
			break
		}
	}
	return Bytes(buf[:n])
}

// Bytes returns the flow hash of the frame b (or of its first bytes: at
// most MaxHeader are read).
func Bytes(b []byte) uint32 {
	if len(b) < 14 {
		return fmix(uint32(len(b)))
	}
	off := 12
	et := binary.BigEndian.Uint16(b[off:])
	off += 2
	for i := 0; i < 2 && (et == etherTypeVLAN || et == etherTypeQinQ) && len(b) >= off+4; i++ {
		et = binary.BigEndian.Uint16(b[off+2:])
		off += 4
	}
	switch et {
	case etherTypeIPv4:
		if h, ok := ipv4(b[off:]); ok {
			return h
		}
	case etherTypeIPv6:
		if h, ok := ipv6(b[off:]); ok {
			return h
		}
	}
	// L2: the two addresses, symmetric, and the EtherType.
	dst := uint64(binary.BigEndian.Uint32(b[0:]))<<16 | uint64(binary.BigEndian.Uint16(b[4:]))
	src := uint64(binary.BigEndian.Uint32(b[6:]))<<16 | uint64(binary.BigEndian.Uint16(b[10:]))
	return fmix(mix64(dst) + mix64(src) + uint32(et))
}

// ipv4 hashes an IPv4 packet p; ok is false if p is not a valid header.
func ipv4(p []byte) (uint32, bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return 0, false
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 {
		return 0, false
	}
	proto := p[9]
	// The addresses ordered, so that the key is the same both ways.
	a, b := binary.BigEndian.Uint32(p[12:]), binary.BigEndian.Uint32(p[16:])
	k := uint64(min(a, b))<<32 | uint64(max(a, b))
	// Ports only for a packet that is not a fragment (offset 0, MF clear).
	var pp uint64
	if binary.BigEndian.Uint16(p[6:])&0x3fff == 0 {
		pp = portPair(p, ihl, proto)
	}
	return uint32(fmix64(k*0x9e3779b97f4a7c15 ^ (pp | uint64(proto)<<32))), true
}

// portPair is the ports of a TCP, UDP or SCTP header at p[off:], ordered
// (smaller first, in 32 bits), or 0 for another protocol or a header cut
// short.
func portPair(p []byte, off int, proto uint8) uint64 {
	if (proto != protoTCP && proto != protoUDP && proto != protoSCTP) || len(p) < off+4 {
		return 0
	}
	s, d := binary.BigEndian.Uint16(p[off:]), binary.BigEndian.Uint16(p[off+2:])
	return uint64(min(s, d))<<16 | uint64(max(s, d))
}

// fmix64 is MurmurHash3's 64-bit finaliser.
func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// ipv6 hashes an IPv6 packet p; ok is false if p is not a valid header.
func ipv6(p []byte) (uint32, bool) {
	if len(p) < 40 || p[0]>>4 != 6 {
		return 0, false
	}
	proto := p[6]
	a, b := fold128(p[8:24]), fold128(p[24:40])
	k := uint64(min(a, b))<<32 | uint64(max(a, b))
	return uint32(fmix64(k*0x9e3779b97f4a7c15 ^ (portPair(p, 40, proto) | uint64(proto)<<32))), true
}

// fold128 is the hash of a 16-byte IPv6 address.
func fold128(a []byte) uint32 {
	hi := binary.BigEndian.Uint64(a[0:])
	lo := binary.BigEndian.Uint64(a[8:])
	return mix64(hi ^ bits.RotateLeft64(lo, 29))
}

// mix64 scatters the bits of x into 32 (a multiply-fold step). Sums of
// mixed values are symmetric: addition does not care which address is
// the source.
func mix64(x uint64) uint32 {
	x *= 0x9e3779b97f4a7c15
	return uint32(x>>32) ^ uint32(x)
}

// fmix is the final avalanche (MurmurHash3's), so that every input bit
// reaches the high bits Queue uses.
func fmix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// Queue maps hash h onto one of n queues (n > 0), evenly, without a
// division: the high bits of h decide.
func Queue(h uint32, n int) int {
	return int(uint64(h) * uint64(n) >> 32)
}
