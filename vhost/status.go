package vhost

import (
	"github.com/sirupsen/logrus"
)

// Device status and device reset (vhost-user.rst, SET_STATUS, GET_STATUS,
// RESET_DEVICE; virtio 1.2, 2.1 "Device Status Field").
//
// With the STATUS protocol feature the frontend mirrors the virtio device
// status to the backend: QEMU sends FEATURES_OK after SET_FEATURES,
// ACKNOWLEDGE|DRIVER|DRIVER_OK (read back with GET_STATUS and ORed) when it
// starts the device, and 0 when it stops it, before the GET_VRING_BASE of
// each ring (a migration's stop, a guest reboot). DPDK's virtio-user reads
// the status back with GET_STATUS and trusts it, so vhostd answers exactly
// what it was told. The status drives nothing here: the rings start and
// stop by their own messages, as without the feature.

// Device status bits (virtio 1.2, 2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 64
	StatusFailed           = 128
)

// netState is the per-connection state of the virtio-net device beyond
// rings and memory: its status, MTU and config space.
type netState struct {
	status  uint64 // last SET_STATUS
	maxMTU  int    // the port's configured MTU, 0 if none: NET_SET_MTU may not exceed it
	mtu     int    // the MTU in force, 0 for none: the configured one, or the frontend's (NET_SET_MTU)
	mac     [6]byte
	written netConfig // fields the frontend wrote with SET_CONFIG's migration flag
}

func newNetState(o Options) netState {
	mtu := max(o.MTU, 0)
	return netState{maxMTU: mtu, mtu: mtu, mac: o.MAC}
}

func (d *device) setStatus(v uint64) error {
	old := d.net.status
	d.net.status = v
	log := d.log.WithFields(logrus.Fields{"status": v, "was": old})
	switch {
	case v&StatusFailed != 0:
		log.Warn("the frontend reports the driver gave up on the device (status FAILED)")
	case v == 0 && old != 0:
		// A stop or a reset; GET_VRING_BASE follows for each ring.
		log.Debug("device status reset by the frontend")
	default:
		log.Debug("device status set by the frontend")
	}
	return nil
}

// resetDevice serves RESET_DEVICE: every ring is stopped and forgotten
// (size, addresses, base, fds), the negotiated features, status and MTU go
// back to their state after connect, as vhost-user.rst asks ("disable all
// rings and reset all internal device state to the initial state, ready
// to be reinitialized"). The connection stays, with what belongs to it
// rather than to the device: the protocol features (negotiated once per
// connection; QEMU does not send them again), the memory table and the
// inflight region (both the frontend's, and sent again before the rings
// restart anyway).
func (d *device) resetDevice() error {
	started := d.anyStarted()
	d.forgetRings()
	if started {
		d.stopped()
	}
	d.features, d.featuresSet = 0, false
	d.net = netState{maxMTU: d.net.maxMTU, mtu: d.net.maxMTU, mac: d.net.mac}
	d.log.Info("device reset by the frontend (RESET_DEVICE): rings stopped, features and status cleared")
	return nil
}
