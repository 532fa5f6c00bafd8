package offload

import (
	"encoding/binary"
	"testing"
)

func TestValidateReasons(t *testing.T) {
	base, bh := frameSpec{payload: 3000, mss: 1448}.build()
	base6, bh6 := frameSpec{v6: true, payload: 3000, mss: 1428}.build()
	udp, uh := frameSpec{udp: true, payload: 3000, mss: 1000}.build()
	// Each case mutates a copy of a valid header and frame.
	cases := []struct {
		name  string
		frame []byte
		hdr   Header
		f     Features
		mut   func(h *Header, f []byte) []byte
		want  Reason
	}{
		{"valid tcp4", base, bh, allHost, nil, ReasonOK},
		{"valid tcp6", base6, bh6, allHost, nil, ReasonOK},
		{"valid uso", udp, uh, allHost, nil, ReasonOK},
		{"valid ufo", udp, uh, allHost, func(h *Header, f []byte) []byte { h.GSOType = GSOUDP; return f }, ReasonOK},
		{"plain frame, header zero", base, Header{}, 0, nil, ReasonOK},
		{"plain frame ignores hdr_len", base, Header{HdrLen: 65535}, 0, nil, ReasonOK},
		{"data_valid from a guest", base, Header{Flags: FlagDataValid}, allHost, nil, ReasonFlagsInvalid},
		{"rsc_info from a guest", base, Header{Flags: FlagRSCInfo}, allHost, nil, ReasonFlagsInvalid},
		{"unknown flag", base, Header{Flags: 0x40}, allHost, nil, ReasonFlagsInvalid},
		{"csum not negotiated", base, bh, allHost &^ FeatureCsum, nil, ReasonOffloadNotNegotiated},
		{"tso4 not negotiated", base, bh, allHost &^ FeatureHostTSO4, nil, ReasonOffloadNotNegotiated},
		{"tso6 not negotiated", base6, bh6, allHost &^ FeatureHostTSO6, nil, ReasonOffloadNotNegotiated},
		{"uso not negotiated", udp, uh, allHost &^ FeatureHostUSO, nil, ReasonOffloadNotNegotiated},
		{"ecn not negotiated", base, bh, allHost &^ FeatureHostECN, func(h *Header, f []byte) []byte { h.GSOType |= GSOECN; return f }, ReasonOffloadNotNegotiated},
		{"ecn negotiated", base, bh, allHost, func(h *Header, f []byte) []byte { h.GSOType |= GSOECN; return f }, ReasonOK},
		{"ecn on udp", udp, uh, allHost, func(h *Header, f []byte) []byte { h.GSOType |= GSOECN; return f }, ReasonGSOTypeUnknown},
		{"ecn alone", base, Header{GSOType: GSOECN}, allHost, nil, ReasonGSOTypeUnknown},
		{"gso type 2", base, bh, allHost, func(h *Header, f []byte) []byte { h.GSOType = 2; return f }, ReasonGSOTypeUnknown},
		{"gso type 6", base, bh, allHost, func(h *Header, f []byte) []byte { h.GSOType = 6; return f }, ReasonGSOTypeUnknown},
		{"gso without csum", base, bh, allHost, func(h *Header, f []byte) []byte { h.Flags = 0; return f }, ReasonGSOWithoutCsum},
		{"gso_size zero", base, bh, allHost, func(h *Header, f []byte) []byte { h.GSOSize = 0; return f }, ReasonGSOSizeZero},
		{"hdr_len beyond frame", base, bh, allHost, func(h *Header, f []byte) []byte { h.HdrLen = uint16(len(f) + 1); return f }, ReasonHdrLenBeyondFrame},
		{"hdr_len short is a hint", base, bh, allHost, func(h *Header, f []byte) []byte { h.HdrLen = 14; return f }, ReasonOK},
		{"csum_start beyond frame", base, bh, allHost, func(h *Header, f []byte) []byte { h.CsumStart = 65535; return f }, ReasonCsumOutsideFrame},
		{"csum field past the end", base, Header{Flags: FlagNeedsCsum}, allHost, func(h *Header, f []byte) []byte { h.CsumStart = uint16(len(f) - 1); return f }, ReasonCsumOutsideFrame},
		{"csum_offset beyond frame", base, bh, allHost, func(h *Header, f []byte) []byte { h.CsumOffset = 65535; return f }, ReasonCsumOutsideFrame},
		{"csum anywhere inside, no gso", base, Header{Flags: FlagNeedsCsum, CsumStart: 20, CsumOffset: 3}, allHost, nil, ReasonOK},
		{"gso csum not tcp's", base, bh, allHost, func(h *Header, f []byte) []byte { h.CsumOffset = 6; return f }, ReasonCsumNotL4},
		{"gso csum_start not l4", base, bh, allHost, func(h *Header, f []byte) []byte { h.CsumStart -= 2; h.CsumOffset += 2; return f }, ReasonCsumNotL4},
		{"tcpv6 on ipv4", base, bh, allHost, func(h *Header, f []byte) []byte { h.GSOType = GSOTCPv6; return f }, ReasonGSOTypeMismatch},
		{"tcpv4 on ipv6", base6, bh6, allHost, func(h *Header, f []byte) []byte { h.GSOType = GSOTCPv4; return f }, ReasonGSOTypeMismatch},
		{"uso on tcp", base, bh, allHost, func(h *Header, f []byte) []byte { h.GSOType = GSOUDPL4; return f }, ReasonGSOTypeMismatch},
		{"tcp on udp", udp, uh, allHost, func(h *Header, f []byte) []byte { h.GSOType = GSOTCPv4; h.CsumOffset = 16; return f }, ReasonGSOTypeMismatch},
		{"arp", base, bh, allHost, func(h *Header, f []byte) []byte { f[12], f[13] = 0x08, 0x06; return f }, ReasonGSOTypeMismatch},
		{"icmp", base, bh, allHost, func(h *Header, f []byte) []byte { f[23] = 1; return f }, ReasonGSOTypeMismatch},
		{"frame short", base[:13], bh, allHost, func(h *Header, f []byte) []byte { h.HdrLen, h.CsumStart, h.CsumOffset = 0, 0, 0; return f }, ReasonFrameShort},
		{"ip header cut", base[:30], bh, allHost, func(h *Header, f []byte) []byte { h.HdrLen, h.CsumStart, h.CsumOffset = 0, 0, 0; return f }, ReasonL3Invalid},
		{"ihl 4", base, bh, allHost, func(h *Header, f []byte) []byte { f[14] = 0x44; return f }, ReasonL3Invalid},
		{"ip version 6 in ipv4 ethertype", base, bh, allHost, func(h *Header, f []byte) []byte { f[14] = 0x65; return f }, ReasonL3Invalid},
		{"fragment", base, bh, allHost, func(h *Header, f []byte) []byte { f[20] = 0x20; return f }, ReasonL3Invalid},
		{"ip len too long", base, bh, allHost, func(h *Header, f []byte) []byte { binary.BigEndian.PutUint16(f[16:], uint16(len(f))); return f }, ReasonIPLenMismatch},
		{"ip len short of frame", base, bh, allHost, func(h *Header, f []byte) []byte { return append(f, 0) }, ReasonIPLenMismatch},
		{"ipv6 len short of frame", base6, bh6, allHost, func(h *Header, f []byte) []byte { return append(f, 0) }, ReasonIPLenMismatch},
		{"ipv6 fragment header", base6, bh6, allHost, func(h *Header, f []byte) []byte { f[20] = ipv6Fragment; return f }, ReasonL4Unsupported},
		{"tcp doff 4", base, bh, allHost, func(h *Header, f []byte) []byte { f[46] = 4 << 4; return f }, ReasonL4Invalid},
		{"tcp doff 15 beyond", base[:80], bh, allHost, func(h *Header, f []byte) []byte {
			binary.BigEndian.PutUint16(f[16:], uint16(len(f)-14))
			f[46] = 15 << 4
			h.HdrLen = 0
			return f
		}, ReasonL4Invalid},
		{"no payload", base[:66], bh, allHost, func(h *Header, f []byte) []byte {
			binary.BigEndian.PutUint16(f[16:], uint16(len(f)-14))
			return f
		}, ReasonNoPayload},
		{"too many segments", base, bh, allHost, func(h *Header, f []byte) []byte { h.GSOSize = 2; return f }, ReasonTooManySegments},
	}
	for _, c := range cases {
		f := append([]byte(nil), c.frame...)
		h := c.hdr
		if c.mut != nil {
			f = c.mut(&h, f)
		}
		l, r := Validate(&h, f, c.f)
		if r != c.want {
			t.Errorf("%s: %v, want %v", c.name, r, c.want)
		}
		if r == ReasonOK && h.GSO() != GSONone && (l.Payload == 0 || l.Payload >= len(f)) {
			t.Errorf("%s: layout %+v", c.name, l)
		}
	}
}

func TestValidateExtensionHeaders(t *testing.T) {
	for _, sp := range []frameSpec{
		{ipOpts: 12, payload: 4000, mss: 1000},
		{v6: true, hopByHop: true, payload: 4000, mss: 1000},
		{v6: true, vlan: true, hopByHop: true, udp: true, payload: 4000, mss: 1000},
	} {
		f, h := sp.build()
		l, r := Validate(&h, f, allHost)
		if r != ReasonOK {
			t.Fatalf("%+v: %v", sp, r)
		}
		if l.Payload != int(h.HdrLen) {
			t.Fatalf("%+v: headers end at %d, want %d", sp, l.Payload, h.HdrLen)
		}
		checkSegments(t, &h, f, l)
	}
}

func TestValidateNoAllocs(t *testing.T) {
	f, h := frameSpec{payload: 60000, mss: 1448}.build()
	if n := testing.AllocsPerRun(100, func() { Validate(&h, f, allHost) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}
