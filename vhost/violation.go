package vhost

import (
	"fmt"
	"time"
)

// Violation is one thing a frontend did that the specifications forbid,
// for the port's negotiation report (vhostctl ports --detail). Not every
// violation breaks the connection: some are tolerated, as other backends
// do, and only reported.
type Violation struct {
	Time    time.Time `json:"time"`
	Request string    `json:"request,omitempty"`
	What    string    `json:"what"`
	// Spec is the section of the specification broken.
	Spec string `json:"spec"`
	// For a violation found on the data path (Request is empty): the
	// ring, the kind ("writable_on_transmit", "readable_on_receive",
	// "avail_flags", "queue_broken", "kick_while_disabled"), and how many
	// times it was seen on the connection; Time is the first.
	Ring  *int   `json:"ring,omitempty"`
	Kind  string `json:"kind,omitempty"`
	Count uint64 `json:"count,omitempty"`
}

// maxViolations bounds the violations a connection keeps: the first
// ones, which usually explain the rest.
const maxViolations = 32

// Sections of the specifications the violations cite.
const (
	specSetFeatures      = "vhost-user.rst, VHOST_USER_SET_FEATURES; virtio 1.2, 2.2.1 (the driver MUST NOT accept a feature the device did not offer)"
	specProtocolFeatures = "vhost-user.rst, Protocol features (the front-end MUST NOT set a protocol feature the back-end did not offer)"
	specNoSetFeatures    = "vhost-user.rst, Ring states; virtio 1.2, 3.1.1 (features are negotiated, FEATURES_OK, before the driver uses the queues)"
	specVringFD          = "vhost-user.rst, VHOST_USER_SET_VRING_KICK (bits 0-7: the ring index, bit 8: no fd; the rest is reserved)"
	specVringAddrFlags   = "vhost-user.rst, Vring address description (flags: only VHOST_VRING_F_LOG, bit 0, is defined)"
)

// violate records a violation of spec by the frontend.
func (d *device) violate(req Request, spec, format string, args ...any) {
	d.violationsSeen++
	if len(d.violations) >= maxViolations {
		return
	}
	d.violations = append(d.violations, Violation{Time: time.Now(), Request: req.String(), What: fmt.Sprintf(format, args...), Spec: spec})
}

// specFor names the section of vhost-user.rst about req, for a violation
// found by a request's checks (a refusal or an error that ends the
// connection).
func specFor(req Request) string {
	return "vhost-user.rst, VHOST_USER_" + req.String()
}
