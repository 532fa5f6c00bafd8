package vswitch

import (
	"math"

	"github.com/vhostd/vhostd/vhost"
)

// MTU enforcement on VM ports (vhost.Rings.MTU; vhost/mtu.go says where
// the MTU comes from). A frame may carry MTU bytes after its Ethernet
// header: MTU+14 bytes in all, MTU+18 with an 802.1Q or 802.1ad tag.
// Longer ones are dropped as mtu_exceeded, whether the guest sent them or
// they were on their way to it. The check is one compare per frame; only
// a frame over the untagged limit has its ethertype read.

// Ethernet header lengths and tag ethertypes.
const (
	ethHeaderLen = 14
	vlanTagLen   = 4
	etherTypeQ   = 0x8100 // 802.1Q
	etherTypeAD  = 0x88a8 // 802.1ad
)

// frameLimit returns the longest untagged frame r's MTU allows, or
// math.MaxInt for no limit.
func frameLimit(r *vhost.Rings) int {
	if r.MTU <= 0 {
		return math.MaxInt
	}
	return r.MTU + ethHeaderLen
}

// overMTU reports whether a frame of n bytes in segs, with n > limit,
// exceeds the MTU: it does unless it is VLAN-tagged and within the tag's
// 4 bytes more.
func overMTU(segs [][]byte, n, limit int) bool {
	if n > limit+vlanTagLen {
		return true
	}
	var h [ethHeaderLen]byte
	if Gather(h[:], segs) < ethHeaderLen {
		return true
	}
	t := uint16(h[12])<<8 | uint16(h[13])
	return t != etherTypeQ && t != etherTypeAD
}
