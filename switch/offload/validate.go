package offload

// MaxSegments bounds the segments one super-frame may ask for. A 64 KiB
// frame with gso_size 1 would otherwise make 65535 frames of headers: a
// guest could turn one descriptor into megabytes of work. 1024 leaves room
// for TCP's smallest MSS (64 KiB / 88 B is about 745).
const MaxSegments = 1024

// Validate checks a header a guest transmitted against its frame and the
// features the guest negotiated (virtio 1.2, 5.1.6.2.1, the driver's
// requirements). It never reads outside frame. For a GSO frame it also
// parses the frame and returns its layout, which the segmenter and
// ForReceiver take; for other frames the Layout is zero.
func Validate(h *Header, frame []byte, f Features) (Layout, Reason) {
	var l Layout
	// "The driver MUST NOT set the VIRTIO_NET_HDR_F_DATA_VALID and
	// VIRTIO_NET_HDR_F_RSC_INFO bits in flags."
	if h.Flags&^FlagNeedsCsum != 0 {
		return l, ReasonFlagsInvalid
	}
	csum := h.Flags&FlagNeedsCsum != 0
	if csum && !f.Has(FeatureCsum) {
		return l, ReasonOffloadNotNegotiated
	}
	gso := h.GSO()
	ecn := h.GSOType&GSOECN != 0
	switch gso {
	case GSONone:
		if ecn {
			return l, ReasonGSOTypeUnknown
		}
	case GSOTCPv4, GSOTCPv6:
		want := FeatureHostTSO4
		if gso == GSOTCPv6 {
			want = FeatureHostTSO6
		}
		if ecn {
			want |= FeatureHostECN
		}
		if !f.Has(want) {
			return l, ReasonOffloadNotNegotiated
		}
	case GSOUDP, GSOUDPL4:
		if ecn { // ECN is a TCP notion
			return l, ReasonGSOTypeUnknown
		}
		want := FeatureHostUFO
		if gso == GSOUDPL4 {
			want = FeatureHostUSO
		}
		if !f.Has(want) {
			return l, ReasonOffloadNotNegotiated
		}
	default:
		return l, ReasonGSOTypeUnknown
	}
	if !csum && gso == GSONone {
		// Nothing offloaded: the header is ignored (hdr_len included,
		// which legacy drivers may leave as anything).
		return l, ReasonOK
	}
	if int(h.HdrLen) > len(frame) {
		return l, ReasonHdrLenBeyondFrame
	}
	if csum && int(h.CsumStart)+int(h.CsumOffset)+2 > len(frame) {
		return l, ReasonCsumOutsideFrame
	}
	if gso == GSONone {
		return l, ReasonOK
	}
	// "If the gso_type differs from VIRTIO_NET_HDR_GSO_NONE, then the
	// driver MUST also set the VIRTIO_NET_HDR_F_NEEDS_CSUM bit in flags and
	// MUST set gso_size to indicate the desired MSS."
	if !csum {
		return l, ReasonGSOWithoutCsum
	}
	if h.GSOSize == 0 {
		return l, ReasonGSOSizeZero
	}
	l, r := parse(frame)
	if r != ReasonOK {
		return l, r
	}
	switch gso {
	case GSOTCPv4:
		if l.IPv6 || l.L4Proto != protoTCP {
			return l, ReasonGSOTypeMismatch
		}
	case GSOTCPv6:
		if !l.IPv6 || l.L4Proto != protoTCP {
			return l, ReasonGSOTypeMismatch
		}
	default: // UFO, USO
		if l.L4Proto != protoUDP {
			return l, ReasonGSOTypeMismatch
		}
	}
	// A super-frame has no Ethernet padding: its IP length covers the rest.
	if l.IPLenEnd != len(frame) {
		return l, ReasonIPLenMismatch
	}
	// The segmenter computes the L4 checksum itself: it must be the one
	// the guest asked for, not some other field the guest pointed at.
	wantOff := uint16(16)
	if l.L4Proto == protoUDP {
		wantOff = 6
	}
	if int(h.CsumStart) != l.L4Off || h.CsumOffset != wantOff {
		return l, ReasonCsumNotL4
	}
	payload := len(frame) - l.Payload
	if payload == 0 {
		return l, ReasonNoPayload
	}
	if (payload+int(h.GSOSize)-1)/int(h.GSOSize) > MaxSegments {
		return l, ReasonTooManySegments
	}
	return l, ReasonOK
}
