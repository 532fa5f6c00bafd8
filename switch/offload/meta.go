package offload

// Meta is a validated frame's offload request in 12 bytes, with no
// pointer, for carrying through the switch beside the frame: the header
// fields ForReceiver and the segmenter use, and the layout a GSO frame was
// parsed into. The zero Meta is a plain frame (nothing offloaded).
type Meta struct {
	// Flags is FlagNeedsCsum, FlagDataValid (a frame whose checksum the
	// uplink device verified: never from a guest, which Validate
	// refuses) or 0.
	Flags      uint8
	GSOType    uint8  // as the sender set it (GSO* with GSOECN)
	GSOSize    uint16 // MSS of a GSO frame
	CsumStart  uint16 // for a GSO frame also its L4 offset (Validate checks they agree)
	CsumOffset uint16
	L3Off      uint8 // GSO frames: 14, or 18 behind a VLAN tag
	L4HdrLen   uint8 // GSO frames: the TCP/UDP header's length (Payload - L4Off)
	IPv6       bool  // GSO frames: the L3 header is IPv6
	_          uint8
}

// MetaOf packs a header that passed Validate with layout l.
func MetaOf(h *Header, l Layout) Meta {
	m := Meta{Flags: h.Flags & FlagNeedsCsum, GSOType: h.GSOType, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}
	if m.Flags == 0 {
		m.CsumStart, m.CsumOffset = 0, 0
	}
	if h.GSO() != GSONone {
		m.GSOSize = h.GSOSize
		m.L3Off = uint8(l.L3Off)
		m.L4HdrLen = uint8(l.Payload - l.L4Off)
		m.IPv6 = l.IPv6
	}
	return m
}

// Plain reports whether nothing is offloaded: the frame is complete.
func (m *Meta) Plain() bool { return m.Flags == 0 && m.GSOType == GSONone }

// GSO reports whether the frame is a GSO super-frame.
func (m *Meta) GSO() bool { return m.GSOType != GSONone }

// Header returns the sender's header as Validate saw it (HdrLen and
// NumBuffers aside, which nothing downstream reads).
func (m *Meta) Header() Header {
	return Header{Flags: m.Flags, GSOType: m.GSOType, GSOSize: m.GSOSize, CsumStart: m.CsumStart, CsumOffset: m.CsumOffset}
}

// Layout returns the layout of a GSO frame of frameLen bytes (a GSO frame
// ends where its IP length says: Validate checks it).
func (m *Meta) Layout(frameLen int) Layout {
	if !m.GSO() {
		return Layout{}
	}
	l := Layout{
		L3Off:    int(m.L3Off),
		L4Off:    int(m.CsumStart),
		Payload:  int(m.CsumStart) + int(m.L4HdrLen),
		IPv6:     m.IPv6,
		L4Proto:  protoTCP,
		IPLenEnd: frameLen,
	}
	if g := m.GSOType &^ GSOECN; g == GSOUDP || g == GSOUDPL4 {
		l.L4Proto = protoUDP
	}
	return l
}
