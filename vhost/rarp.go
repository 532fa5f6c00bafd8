package vhost

import (
	"errors"
	"fmt"
	"net"
)

// Announcing a migrated guest (vhost-user.rst, SEND_RARP).
//
// After a migration QEMU announces the guest from its new place. A driver
// with VIRTIO_NET_F_GUEST_ANNOUNCE sends gratuitous ARPs itself; for one
// without, QEMU asks the backend, with SEND_RARP (a few times, spaced
// out), to broadcast a RARP from the guest's address, so that the switch
// and everything behind the uplink learn where the guest now is.

// Announcer is implemented by a Backend that can send a frame into the
// network as if the guest had sent it.
type Announcer interface {
	// AnnounceRARP sends a RARP request from mac, as the guest would,
	// without waiting for it to go out. It returns ErrNotPermitted if the
	// port may not send from mac (port security).
	AnnounceRARP(mac [6]byte) error
}

// ErrNotPermitted is returned by an Announcer for an address the port may
// not send from.
var ErrNotPermitted = errors.New("the port may not send from this address")

// sendRARP serves SEND_RARP: the first 6 bytes of the u64 payload (in
// memory order) are the guest's MAC.
func (d *device) sendRARP(v uint64) error {
	var mac [6]byte
	for i := range mac {
		mac[i] = byte(v >> (8 * i))
	}
	hw := net.HardwareAddr(mac[:])
	if mac == [6]byte{} || mac[0]&1 != 0 {
		return &refusal{fmt.Errorf("MAC %v: a guest's address must be unicast and not zero", hw)}
	}
	b := d.backend
	if g, ok := b.(*connGuard); ok {
		b = g.Backend
	}
	a, ok := b.(Announcer)
	if !ok {
		return &refusal{fmt.Errorf("MAC %v: this port cannot send frames of its own", hw)}
	}
	if err := a.AnnounceRARP(mac); err != nil {
		return &refusal{fmt.Errorf("MAC %v: %w", hw, err)}
	}
	d.log.WithField("mac", hw.String()).Info("RARP sent for the guest (SEND_RARP)")
	return nil
}
