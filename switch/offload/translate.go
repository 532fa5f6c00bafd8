package offload

// Action is what the switch does with a validated frame for one receiver.
type Action uint8

const (
	// ActionPass: deliver the frame as it is, with the returned header.
	ActionPass Action = iota
	// ActionComplete: complete the checksum (CompleteChecksum with the
	// sender's csum_start/csum_offset), then deliver with the header.
	ActionComplete
	// ActionSegment: segment the frame (Segmenter) and deliver each
	// segment with the returned header.
	ActionSegment
	// ActionDrop: the receiver cannot take the frame and software cannot
	// make it fit (UFO to a receiver without GUEST_UFO: IP fragmentation
	// is not implemented).
	ActionDrop
)

var actionNames = [...]string{"pass", "complete", "segment", "drop"}

// String returns the action's snake_case name.
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}

// ForReceiver returns the header a receiver with the negotiated (GUEST_*)
// features rx should see for a frame whose sender's header h passed
// Validate with layout l, and what must be done to the frame first.
// NumBuffers is left 0: the receive path sets it.
//
//   - A frame whose checksum a device verified (DATA_VALID, from the
//     uplink) is passed with DATA_VALID to a receiver with GUEST_CSUM,
//     with a zero header to others.
//   - A partial checksum is passed on (NEEDS_CSUM) to a receiver with
//     GUEST_CSUM, else completed here.
//   - A super-frame is passed on to a receiver with GUEST_CSUM and the
//     matching GUEST_TSO4/TSO6/UFO/USO4/USO6 (and GUEST_ECN when the ECN
//     bit is set), with hdr_len the exact header length; else it is
//     segmented here and the segments, whose checksums this package
//     computed, carry DATA_VALID when the receiver has GUEST_CSUM.
func ForReceiver(h *Header, l Layout, rx Features) (Header, Action) {
	gso := h.GSO()
	if gso == GSONone {
		if h.Flags&FlagNeedsCsum == 0 {
			// DATA_VALID (a frame from a device that checked the
			// checksum) means something to GUEST_CSUM receivers only.
			if h.Flags&FlagDataValid != 0 && rx.Has(FeatureGuestCsum) {
				return Header{Flags: FlagDataValid}, ActionPass
			}
			return Header{}, ActionPass
		}
		if rx.Has(FeatureGuestCsum) {
			return Header{Flags: FlagNeedsCsum, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}, ActionPass
		}
		return Header{}, ActionComplete
	}
	want := FeatureGuestCsum
	switch gso {
	case GSOTCPv4:
		want |= FeatureGuestTSO4
	case GSOTCPv6:
		want |= FeatureGuestTSO6
	case GSOUDP:
		want |= FeatureGuestUFO
	case GSOUDPL4:
		want |= FeatureGuestUSO4
		if l.IPv6 {
			want = FeatureGuestCsum | FeatureGuestUSO6
		}
	}
	if h.GSOType&GSOECN != 0 {
		want |= FeatureGuestECN
	}
	if rx.Has(want) {
		return Header{
			Flags:      FlagNeedsCsum,
			GSOType:    h.GSOType,
			HdrLen:     uint16(l.Payload),
			GSOSize:    h.GSOSize,
			CsumStart:  h.CsumStart,
			CsumOffset: h.CsumOffset,
		}, ActionPass
	}
	if gso == GSOUDP {
		return Header{}, ActionDrop
	}
	if rx.Has(FeatureGuestCsum) {
		return Header{Flags: FlagDataValid}, ActionSegment
	}
	return Header{}, ActionSegment
}
