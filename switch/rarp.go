package vswitch

import (
	"encoding/binary"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/switch/offload"
	"github.com/vhostd/vhostd/vhost"
)

// RARP announcements of a migrated guest (vhost.Announcer).
//
// The frame is what QEMU itself broadcasts for a guest it announces
// (RFC 903): a reverse request from the guest's address for the guest's
// address, padded to the Ethernet minimum.

// RARPFrameLen is the length of an announcement: 14 bytes of Ethernet
// header, 28 of RARP, padded to 60.
const RARPFrameLen = 60

// EtherTypeRARP is the RARP ethertype.
const EtherTypeRARP = 0x8035

// rarpReverseRequest is the RARP opcode of a reverse request.
const rarpReverseRequest = 3

// rarpPending marks the mailbox full (the MAC sits in the low 48 bits).
const rarpPending = 1 << 63

// BuildRARP writes the announcement of mac into b, which holds at least
// RARPFrameLen bytes.
func BuildRARP(b []byte, mac MAC) {
	b = b[:RARPFrameLen]
	clear(b)
	var m [6]byte
	putMAC(m[:], mac)
	for i := 0; i < 6; i++ {
		b[i] = 0xff // broadcast
	}
	copy(b[6:], m[:])
	binary.BigEndian.PutUint16(b[12:], EtherTypeRARP)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(a[2:], 0x0800) // protocol: IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], rarpReverseRequest)
	copy(a[8:], m[:])  // sender hardware address; sender IP 0
	copy(a[18:], m[:]) // target hardware address; target IP 0
}

// Bytes returns the address in wire order.
func (m MAC) Bytes() (b [6]byte) {
	putMAC(b[:], m)
	return b
}

func putMAC(b []byte, m MAC) {
	for i := 0; i < 6; i++ {
		b[i] = byte(m >> (8 * (5 - i)))
	}
}

var _ vhost.Announcer = (*VMPort)(nil)

// AnnounceRARP implements vhost.Announcer: the port's first lane sends a
// RARP from mac at its next burst, as if the guest had. An address the
// port may not send from is refused and counted as rx_spoofed. Only the
// last of announcements made before the lane's next burst is sent.
func (v *VMPort) AnnounceRARP(mac [6]byte) error {
	m := macOf(mac[:])
	if v.ctl == nil {
		return vhost.ErrNotPermitted
	}
	if !v.ctl.MaySend(m) {
		v.counters.Drops[DropRxSpoofed].Add(1)
		v.log.WithField("mac", m.String()).Warn("RARP refused: the port may not send from that address (port security)")
		return vhost.ErrNotPermitted
	}
	v.rarp.Store(rarpPending | uint64(m))
	v.ctl.Wake()
	v.log.WithFields(logrus.Fields{"mac": m.String()}).Debug("RARP queued")
	return nil
}

// announce puts a queued announcement, if any, into b as its first frame
// and returns how many frames it put (0 or 1). Only the first lane sends
// them; the check costs the others nothing and the first one plain load.
func (l *vmLane) announce(b *Burst) int {
	if l.id != 0 {
		return 0
	}
	m := l.v.rarp.Load()
	if m == 0 || !l.v.rarp.CompareAndSwap(m, 0) {
		return 0
	}
	BuildRARP(l.rarpFrame[:], MAC(m&(1<<48-1)))
	f := &b.Frames[0]
	f.Segs = append(b.SegPool(0), l.rarpFrame[:])
	f.Len = RARPFrameLen
	f.Offload = offload.Meta{}
	return 1
}

// announcing reports whether the lane has an announcement to send.
func (l *vmLane) announcing() bool { return l.id == 0 && l.v.rarp.Load() != 0 }
