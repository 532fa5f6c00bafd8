package offload

import "encoding/binary"

// EtherTypes and IP protocol numbers the parser knows.
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100 // 802.1Q
	etherTypeQinQ = 0x88a8 // 802.1ad outer tag

	protoTCP = 6
	protoUDP = 17

	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6DestOpts = 60
)

// Layout holds the offsets of a parsed frame's layers.
type Layout struct {
	L3Off    int   // start of the IP header (after Ethernet and one VLAN tag)
	L4Off    int   // start of the TCP/UDP header
	Payload  int   // start of the L4 payload (end of all headers)
	IPv6     bool  // the L3 header is IPv6, else IPv4
	L4Proto  uint8 // protoTCP or protoUDP
	IPLenEnd int   // end of the IP packet according to its length field
}

// parse walks Ethernet (with at most one 802.1Q/802.1ad tag), IPv4 (with
// options, no fragments) or IPv6 (with hop-by-hop, routing and destination
// options headers, no fragment header), and a TCP or UDP header. It reads
// only inside frame. The IP length field must not claim more than the frame
// holds; a shorter one is reported in IPLenEnd (Ethernet padding).
func parse(frame []byte) (Layout, Reason) {
	var l Layout
	if len(frame) < 14 {
		return l, ReasonFrameShort
	}
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	off += 2
	if et == etherTypeVLAN || et == etherTypeQinQ {
		if len(frame) < off+4 {
			return l, ReasonFrameShort
		}
		et = binary.BigEndian.Uint16(frame[off+2:])
		off += 4
	}
	l.L3Off = off
	var proto uint8
	switch et {
	case etherTypeIPv4:
		if len(frame) < off+20 {
			return l, ReasonL3Invalid
		}
		vihl := frame[off]
		ihl := int(vihl&0x0f) * 4
		if vihl>>4 != 4 || ihl < 20 || len(frame) < off+ihl {
			return l, ReasonL3Invalid
		}
		// A fragment (MF set or a non-zero offset) cannot be segmented:
		// its L4 header is in the first fragment only.
		if binary.BigEndian.Uint16(frame[off+6:])&0x3fff != 0 {
			return l, ReasonL3Invalid
		}
		totLen := int(binary.BigEndian.Uint16(frame[off+2:]))
		if totLen < ihl || off+totLen > len(frame) {
			return l, ReasonIPLenMismatch
		}
		l.IPLenEnd = off + totLen
		proto = frame[off+9]
		off += ihl
	case etherTypeIPv6:
		if len(frame) < off+40 {
			return l, ReasonL3Invalid
		}
		if frame[off]>>4 != 6 {
			return l, ReasonL3Invalid
		}
		plen := int(binary.BigEndian.Uint16(frame[off+4:]))
		if off+40+plen > len(frame) {
			return l, ReasonIPLenMismatch
		}
		l.IPv6 = true
		l.IPLenEnd = off + 40 + plen
		proto = frame[off+6]
		off += 40
		// Walk the extension headers a TCP/UDP sender commonly emits;
		// a bounded count keeps a hostile chain cheap.
		for i := 0; i < 8; i++ {
			if proto != ipv6HopByHop && proto != ipv6Routing && proto != ipv6DestOpts {
				break
			}
			if l.IPLenEnd < off+8 {
				return l, ReasonL3Invalid
			}
			n := (int(frame[off+1]) + 1) * 8
			if l.IPLenEnd < off+n {
				return l, ReasonL3Invalid
			}
			proto = frame[off]
			off += n
		}
	default:
		return l, ReasonGSOTypeMismatch
	}
	l.L4Off = off
	l.L4Proto = proto
	switch proto {
	case protoTCP:
		if l.IPLenEnd < off+20 {
			return l, ReasonL4Invalid
		}
		doff := int(frame[off+12]>>4) * 4
		if doff < 20 || l.IPLenEnd < off+doff {
			return l, ReasonL4Invalid
		}
		l.Payload = off + doff
	case protoUDP:
		if l.IPLenEnd < off+8 {
			return l, ReasonL4Invalid
		}
		l.Payload = off + 8
	case ipv6HopByHop, ipv6Routing, ipv6DestOpts, ipv6Fragment, 51 /* AH */ :
		return l, ReasonL4Unsupported
	default:
		return l, ReasonGSOTypeMismatch
	}
	return l, ReasonOK
}
