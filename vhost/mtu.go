package vhost

import (
	"fmt"

	"github.com/sirupsen/logrus"
)

// The MTU (virtio 1.2, 5.1.4 "mtu"; vhost-user.rst, NET_SET_MTU).
//
// A port may have an MTU (config mtu=, or the global default). vhostd
// offers VIRTIO_NET_F_MTU and the NET_MTU protocol feature; a QEMU device
// with host_mtu=N then tells the driver N, and vhostd with NET_SET_MTU
// before the device starts. vhostd accepts any N up to the port's MTU and
// enforces N from then on (it is what the driver was told); a larger N is
// refused, and QEMU does not start the device ("MTU not supported by the
// backend"), which is better than a guest whose frames the switch drops.
// The data path drops frames longer than the MTU plus the Ethernet header
// (14 bytes, 18 with a VLAN tag) in both directions, counted as
// mtu_exceeded. A port without an MTU enforces none until the frontend
// sets one, as before vhostd knew of MTUs.

// MTU limits (virtio 1.2, 5.1.4.1: the device MUST NOT set mtu below 68;
// the field is 16 bits).
const (
	MinMTU     = 68
	MaxMTU     = 65535
	DefaultMTU = 1500
)

// CheckMTU reports whether mtu is an MTU a port can have, with an error
// that says what to use instead.
func CheckMTU(mtu int) error {
	if mtu < MinMTU || mtu > MaxMTU {
		return fmt.Errorf("mtu %d is out of range: use %d to %d (%d is Ethernet's usual)", mtu, MinMTU, MaxMTU, DefaultMTU)
	}
	return nil
}

// setMTU serves NET_SET_MTU. A refusal leaves the MTU as it was and the
// connection up; the frontend learns of it by its REPLY_ACK.
func (d *device) setMTU(v uint64) error {
	limit := d.net.maxMTU
	if limit == 0 {
		limit = MaxMTU
	}
	if v < MinMTU || v > uint64(limit) {
		return &refusal{fmt.Errorf("MTU %d: this port takes %d to %d (raise the port's mtu setting to allow more)", v, MinMTU, limit)}
	}
	d.net.mtu = int(v)
	d.log.WithFields(logrus.Fields{"mtu": v, "port_mtu": d.net.maxMTU}).Info("MTU set by the frontend")
	return d.update()
}
