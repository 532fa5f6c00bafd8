package e2e

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
)

// rawTCP builds the frames of one side of a TCP connection by hand, for a
// peer that must keep sending into a receiver that does not answer (a
// guest whose link is down): no kernel TCP behind it, so no
// retransmission, no congestion window and no timeout stop it, and each
// segment goes out exactly once, when the test says.
type rawTCP struct {
	srcMAC, dstMAC   net.HardwareAddr
	srcIP, dstIP     netip.Addr
	srcPort, dstPort uint16
	id               uint16 // the next IPv4 identification
	seq, ack         uint32 // the next sequence number to send; what we acknowledge
	peerWindow       uint16 // the window of the receiver's SYN-ACK
	peerMSS          uint16 // the MSS option of the receiver's SYN-ACK (0 if none)
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// frame returns an Ethernet frame carrying a TCP segment with flags,
// c.seq and c.ack, and payload; a SYN carries the MSS option 1460.
func (c *rawTCP) frame(flags uint8, payload []byte) []byte {
	opts := 0
	if flags&tcpSYN != 0 {
		opts = 4
	}
	tcpLen := 20 + opts + len(payload)
	f := make([]byte, 14+20+tcpLen)
	copy(f[0:], c.dstMAC)
	copy(f[6:], c.srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)

	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+tcpLen))
	binary.BigEndian.PutUint16(ip[4:], c.id)
	c.id++
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = 6
	s, d := c.srcIP.As4(), c.dstIP.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(0, ip))

	tcp := f[34:]
	binary.BigEndian.PutUint16(tcp[0:], c.srcPort)
	binary.BigEndian.PutUint16(tcp[2:], c.dstPort)
	binary.BigEndian.PutUint32(tcp[4:], c.seq)
	if flags&tcpACK != 0 {
		binary.BigEndian.PutUint32(tcp[8:], c.ack)
	}
	tcp[12] = byte((20+opts)/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	if opts > 0 {
		copy(tcp[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	}
	copy(tcp[20+opts:], payload)
	// The pseudo-header: addresses, protocol, TCP length.
	var ph [12]byte
	copy(ph[0:], s[:])
	copy(ph[4:], d[:])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(tcpLen))
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(inetSum(0, ph[:]), tcp))

	if flags&tcpSYN != 0 {
		c.seq++
	}
	c.seq += uint32(len(payload))
	if flags&tcpFIN != 0 {
		c.seq++
	}
	return f
}

var errNotOurs = errors.New("not a segment of this connection")

// synAck takes frame as the receiver's answer to our SYN: a SYN-ACK of
// this connection that acknowledges it. It records the receiver's
// initial sequence number, window and MSS.
func (c *rawTCP) synAck(frame []byte) error {
	if len(frame) < 14+20+20 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		return errNotOurs
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ip[9] != 6 || len(ip) < ihl+20 {
		return errNotOurs
	}
	s, d := c.srcIP.As4(), c.dstIP.As4()
	if [4]byte(ip[12:16]) != d || [4]byte(ip[16:20]) != s {
		return errNotOurs
	}
	tcp := ip[ihl:]
	if binary.BigEndian.Uint16(tcp[0:]) != c.dstPort || binary.BigEndian.Uint16(tcp[2:]) != c.srcPort {
		return errNotOurs
	}
	if tcp[13]&tcpRST != 0 {
		return errors.New("the receiver reset the connection")
	}
	if tcp[13]&(tcpSYN|tcpACK) != tcpSYN|tcpACK || binary.BigEndian.Uint32(tcp[8:]) != c.seq {
		return errNotOurs
	}
	c.ack = binary.BigEndian.Uint32(tcp[4:]) + 1
	c.peerWindow = binary.BigEndian.Uint16(tcp[14:])
	off := int(tcp[12]>>4) * 4
	for o := tcp[20:min(off, len(tcp))]; len(o) > 0; {
		switch {
		case o[0] == 0:
			o = nil
		case o[0] == 1:
			o = o[1:]
		case len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o):
			o = nil
		default:
			if o[0] == 2 && o[1] == 4 {
				c.peerMSS = binary.BigEndian.Uint16(o[2:])
			}
			o = o[o[1]:]
		}
	}
	return nil
}

// inetSum adds b to the ones-complement sum acc (RFC 1071).
func inetSum(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

// inetChecksum returns the Internet checksum of b on top of the partial
// sum acc.
func inetChecksum(acc uint32, b []byte) uint16 {
	acc = inetSum(acc, b)
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

// TestRawTCPFrame checks the frames rawTCP builds: their IPv4 and TCP
// checksums verify (summed over, they fold to zero), and sequence numbers
// advance by the payload, SYN and FIN.
func TestRawTCPFrame(t *testing.T) {
	c := &rawTCP{
		srcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, dstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		srcIP: netip.MustParseAddr("10.1.2.3"), dstIP: netip.MustParseAddr("10.4.5.6"),
		srcPort: 40000, dstPort: 5000, seq: 0xfffffff0,
	}
	for _, tc := range []struct {
		flags   uint8
		payload []byte
		seq     uint32
	}{
		{tcpSYN, nil, 0xfffffff1},
		{tcpACK | tcpPSH, []byte("hello, world!"), 0xfffffffe},
		{tcpACK | tcpFIN, []byte("odd"), 0x2},
	} {
		f := c.frame(tc.flags, tc.payload)
		if c.seq != tc.seq {
			t.Errorf("flags %#x: seq %#x after, want %#x", tc.flags, c.seq, tc.seq)
		}
		ip := f[14:34]
		if inetChecksum(0, ip) != 0 {
			t.Errorf("flags %#x: IPv4 header checksum does not verify", tc.flags)
		}
		tcp := f[34:]
		var ph [12]byte
		copy(ph[0:], ip[12:20])
		ph[9] = 6
		binary.BigEndian.PutUint16(ph[10:], uint16(len(tcp)))
		if inetChecksum(inetSum(0, ph[:]), tcp) != 0 {
			t.Errorf("flags %#x: TCP checksum does not verify", tc.flags)
		}
		if got := int(binary.BigEndian.Uint16(ip[2:])); got != len(f)-14 {
			t.Errorf("flags %#x: IPv4 total length %d, want %d", tc.flags, got, len(f)-14)
		}
	}
}
