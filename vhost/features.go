package vhost

import (
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// Virtio feature bits (virtio 1.2, sections 5.1.3 and 6) that vhostd knows
// by name.
const (
	FeatureNetCsum         = 0
	FeatureNetGuestCsum    = 1
	FeatureNetMAC          = 5
	FeatureNetGuestTSO4    = 7
	FeatureNetGuestTSO6    = 8
	FeatureNetGuestECN     = 9
	FeatureNetGuestUFO     = 10
	FeatureNetHostTSO4     = 11
	FeatureNetHostTSO6     = 12
	FeatureNetHostECN      = 13
	FeatureNetHostUFO      = 14
	FeatureNetMrgRxbuf     = 15
	FeatureNetStatus       = 16
	FeatureNetCtrlVQ       = 17
	FeatureNetMQ           = 22
	FeatureNotifyOnEmpty   = 24
	FeatureLogAll          = 26 // VHOST_F_LOG_ALL
	FeatureAnyLayout       = 27
	FeatureIndirectDesc    = 28
	FeatureEventIdx        = 29
	FeatureProtocolFeature = 30 // VHOST_USER_F_PROTOCOL_FEATURES
	FeatureVersion1        = 32
	FeatureAccessPlatform  = 33
	FeatureRingPacked      = 34
	FeatureInOrder         = 35
)

// Virtio-net feature bits for the MTU and for announcing a guest after
// migration (virtio 1.2, 5.1.3).
const (
	FeatureNetMTU           = 3
	FeatureNetGuestAnnounce = 21
)

// Protocol feature bits (vhost-user.rst, "Protocol features").
const (
	ProtocolMQ                 = 0
	ProtocolLogShmfd           = 1
	ProtocolRARP               = 2
	ProtocolReplyAck           = 3
	ProtocolNetMTU             = 4
	ProtocolBackendReq         = 5
	ProtocolCrossEndian        = 6
	ProtocolCryptoSession      = 7
	ProtocolPagefault          = 8
	ProtocolConfig             = 9
	ProtocolBackendSendFD      = 10
	ProtocolHostNotifier       = 11
	ProtocolInflightShmfd      = 12
	ProtocolResetDevice        = 13
	ProtocolInbandNotification = 14
	ProtocolConfigureMemSlots  = 15
	ProtocolStatus             = 16
)

var featureNames = map[uint]string{
	FeatureNetCsum: "csum", FeatureNetGuestCsum: "guest_csum", FeatureNetMAC: "mac",
	FeatureNetGuestTSO4: "guest_tso4", FeatureNetGuestTSO6: "guest_tso6", FeatureNetGuestECN: "guest_ecn",
	FeatureNetGuestUFO: "guest_ufo", FeatureNetHostTSO4: "host_tso4", FeatureNetHostTSO6: "host_tso6",
	FeatureNetHostECN: "host_ecn", FeatureNetHostUFO: "host_ufo",
	FeatureNetMrgRxbuf: "mrg_rxbuf", FeatureNetStatus: "status", FeatureNetCtrlVQ: "ctrl_vq",
	FeatureNetMQ: "mq", FeatureNetMTU: "mtu", FeatureNetGuestAnnounce: "guest_announce", FeatureNotifyOnEmpty: "notify_on_empty", FeatureLogAll: "log_all",
	FeatureAnyLayout: "any_layout", FeatureIndirectDesc: "indirect_desc",
	FeatureEventIdx: "event_idx", FeatureProtocolFeature: "protocol_features",
	FeatureVersion1: "version_1", FeatureAccessPlatform: "access_platform",
	FeatureRingPacked: "ring_packed", FeatureInOrder: "in_order",
}

var protocolNames = map[uint]string{
	ProtocolMQ: "mq", ProtocolLogShmfd: "log_shmfd", ProtocolRARP: "rarp",
	ProtocolReplyAck: "reply_ack", ProtocolNetMTU: "net_mtu", ProtocolBackendReq: "backend_req",
	ProtocolCrossEndian: "cross_endian", ProtocolCryptoSession: "crypto_session",
	ProtocolPagefault: "pagefault", ProtocolConfig: "config", ProtocolBackendSendFD: "backend_send_fd",
	ProtocolHostNotifier: "host_notifier", ProtocolInflightShmfd: "inflight_shmfd",
	ProtocolResetDevice: "reset_device", ProtocolInbandNotification: "inband_notifications",
	ProtocolConfigureMemSlots: "configure_mem_slots", ProtocolStatus: "status",
}

// OfferedFeatures are the virtio features vhostd offers before any
// per-port mask. With MQ the driver may use several queue pairs (as many
// as the frontend's device config says): vhostd polls every transmit
// queue and delivers into receive queue 0.
//
// IN_ORDER promises that every queue's buffers are used in the order they
// were made available, which lets a driver skip reading used entries'
// ids (DPDK's virtio driver then takes its in-order paths). The data path
// keeps it by construction: chains are popped in ring order, put on the
// used ring in that same order, and only the last ones popped are ever
// given back (Unpop). Any change there must keep that.
//
// MTU lets the frontend tell the driver the port's MTU (NET_SET_MTU,
// mtu.go); with GUEST_ANNOUNCE a migrated guest announces itself, and
// for a driver without it the frontend asks for a RARP (rarp.go).
// RING_PACKED: every ring of a device that acks it has the packed layout
// (virtio 1.2, 2.8; device.go builds virtqueue.PackedQueue for it).
// LOG_ALL: vhostd marks its writes into guest memory in the frontend's
// dirty-page log when asked (log.go), so that QEMU can migrate the guest.
//
// Offloads (OfferedOffloads): the switch carries each frame's
// virtio-net header through and, per receiver, passes the offload on or
// completes it in software (switch/vmoffload.go).
const OfferedFeatures = 1<<FeatureVersion1 | 1<<FeatureIndirectDesc | 1<<FeatureEventIdx | 1<<FeatureNetMQ |
	1<<FeatureNetMrgRxbuf | 1<<FeatureAnyLayout | 1<<FeatureProtocolFeature | 1<<FeatureInOrder |
	1<<FeatureNetMTU | 1<<FeatureNetGuestAnnounce | 1<<FeatureLogAll | 1<<FeatureRingPacked | OfferedOffloads

// OfferedOffloads are the offload features offered: partial checksums
// and TCP segmentation (with ECN) both ways. Not UFO: a UFO super-frame
// to a receiver without it would need IP fragmentation, which vhostd does
// not do (and Linux no longer sends UFO). Not USO: QEMU 7.2 knows no USO
// bits to pass on.
const OfferedOffloads = 1<<FeatureNetCsum | 1<<FeatureNetGuestCsum |
	1<<FeatureNetHostTSO4 | 1<<FeatureNetHostTSO6 | 1<<FeatureNetHostECN |
	1<<FeatureNetGuestTSO4 | 1<<FeatureNetGuestTSO6 | 1<<FeatureNetGuestECN

// OfferedProtocolFeatures are the protocol features vhostd offers.
const OfferedProtocolFeatures = 1<<ProtocolMQ | 1<<ProtocolReplyAck | 1<<ProtocolConfigureMemSlots | 1<<ProtocolInflightShmfd |
	1<<ProtocolRARP | 1<<ProtocolNetMTU | 1<<ProtocolConfig | 1<<ProtocolResetDevice | 1<<ProtocolStatus | 1<<ProtocolLogShmfd

// Maskable lists the feature names a port option may turn off.
func Maskable() []string {
	var out []string
	for b := uint(0); b < 64; b++ {
		if OfferedFeatures&(1<<b) != 0 {
			out = append(out, featureNames[b])
		}
	}
	sort.Strings(out)
	return out
}

// ParseFeatureMask turns feature names ("mrg_rxbuf", "event_idx", ...) into
// a bit mask. Only features vhostd offers can be named.
func ParseFeatureMask(names []string) (uint64, error) {
	var mask uint64
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		found := false
		for b, name := range featureNames {
			if name == n && OfferedFeatures&(1<<b) != 0 {
				mask |= 1 << b
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown feature %q: vhostd can disable %s", n, strings.Join(Maskable(), ", "))
		}
	}
	return mask, nil
}

func names(v uint64, table map[uint]string) []string {
	var out []string
	for v != 0 {
		b := uint(bits.TrailingZeros64(v))
		v &^= 1 << b
		if n, ok := table[b]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("bit%d", b))
		}
	}
	return out
}

// FeatureNames lists the names of the virtio feature bits set in v.
func FeatureNames(v uint64) []string { return names(v, featureNames) }

// ProtocolFeatureNames lists the names of the protocol feature bits set in v.
func ProtocolFeatureNames(v uint64) []string { return names(v, protocolNames) }
