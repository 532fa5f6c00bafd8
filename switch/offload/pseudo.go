package offload

import "encoding/binary"

// Parse returns the layout of an Ethernet/IP/TCP-or-UDP frame, as Validate
// parses a GSO frame (see parse): for callers that learn of an offload
// from somewhere other than a virtio-net header (a DPDK device's mbuf
// flags) and must find the headers themselves. It reads only inside
// frame, which must hold the headers; IPLenEnd is checked against
// len(frame).
func Parse(frame []byte) (Layout, Reason) { return parse(frame) }

// SetPseudoSum writes the sum of the pseudo header (addresses, protocol
// and, with withLen, the L4 length l4Len) of the frame with layout l into
// its L4 checksum field, folded and not complemented: what a sender leaves
// there for a device to complete. Virtio (and Linux's CHECKSUM_PARTIAL)
// include the length, also for GSO frames (the super-frame's); DPDK's TSO
// leaves it out. frame must hold the headers (through l.Payload); it
// reports false, writing nothing, when it does not.
func SetPseudoSum(frame []byte, l Layout, withLen bool, l4Len int) bool {
	off := 16
	if l.L4Proto == protoUDP {
		off = 6
	}
	if l.L3Off < 14 || l.L4Off+off+2 > len(frame) || l.L4Off < l.L3Off+20 {
		return false
	}
	var acc uint64
	if l.IPv6 {
		if l.L3Off+40 > len(frame) {
			return false
		}
		acc = sum(0, frame[l.L3Off+8:l.L3Off+40])
	} else {
		acc = sum(0, frame[l.L3Off+12:l.L3Off+20])
	}
	acc = addBE16(acc, uint16(l.L4Proto))
	if withLen {
		acc = addBE16(acc, uint16(l4Len))
		acc = addBE16(acc, uint16(l4Len>>16))
	}
	binary.LittleEndian.PutUint16(frame[l.L4Off+off:], fold(acc))
	return true
}

// TCPFlagCWR reports whether the TCP header of the frame with layout l
// has CWR set (a GSO frame with it is GSO_ECN). frame must hold the TCP
// header.
func TCPFlagCWR(frame []byte, l Layout) bool {
	return l.L4Proto == protoTCP && l.L4Off+14 <= len(frame) && frame[l.L4Off+13]&tcpCWR != 0
}
