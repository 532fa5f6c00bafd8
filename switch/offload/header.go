package offload

import "encoding/binary"

// Header flags (virtio 1.2, 5.1.6).
const (
	FlagNeedsCsum uint8 = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from CsumStart must be completed
	FlagDataValid uint8 = 2 // VIRTIO_NET_HDR_F_DATA_VALID: the receiver need not verify the checksum
	FlagRSCInfo   uint8 = 4 // VIRTIO_NET_HDR_F_RSC_INFO: coalescing info in CsumStart/CsumOffset
)

// GSO types (virtio 1.2, 5.1.6).
const (
	GSONone  uint8 = 0    // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 uint8 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   uint8 = 3    // VIRTIO_NET_HDR_GSO_UDP (UFO: IP fragmentation)
	GSOTCPv6 uint8 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	GSOUDPL4 uint8 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4 (USO: one UDP datagram per segment)
	GSOECN   uint8 = 0x80 // VIRTIO_NET_HDR_GSO_ECN: the TCP super-frame carries CWR
)

// Header lengths: the legacy layout without num_buffers, and the one used
// with VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF.
const (
	HeaderLenLegacy = 10
	HeaderLen       = 12
)

// Header is a decoded virtio-net header (struct virtio_net_hdr).
type Header struct {
	Flags      uint8
	GSOType    uint8 // one of the GSO* values, optionally with GSOECN
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
	NumBuffers uint16 // only in the 12-byte layout
}

// GSO reports the GSO type without the ECN bit.
func (h *Header) GSO() uint8 { return h.GSOType &^ GSOECN }

// Decode reads a header from b, which must hold at least 10 bytes; the
// 12-byte layout (num_buffers) is read when len(b) >= 12. It reports false
// when b is too short.
func (h *Header) Decode(b []byte) bool {
	if len(b) < HeaderLenLegacy {
		return false
	}
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.LittleEndian.Uint16(b[2:])
	h.GSOSize = binary.LittleEndian.Uint16(b[4:])
	h.CsumStart = binary.LittleEndian.Uint16(b[6:])
	h.CsumOffset = binary.LittleEndian.Uint16(b[8:])
	h.NumBuffers = 0
	if len(b) >= HeaderLen {
		h.NumBuffers = binary.LittleEndian.Uint16(b[10:])
	}
	return true
}

// Encode writes the header into b in the 10-byte layout if len(b) < 12,
// else the 12-byte one, and returns the number of bytes written (0 when b
// holds fewer than 10 bytes).
func (h *Header) Encode(b []byte) int {
	if len(b) < HeaderLenLegacy {
		return 0
	}
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
	if len(b) < HeaderLen {
		return HeaderLenLegacy
	}
	binary.LittleEndian.PutUint16(b[10:], h.NumBuffers)
	return HeaderLen
}
