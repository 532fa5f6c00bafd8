package offload

import "testing"

func TestForReceiver(t *testing.T) {
	f4, h4 := frameSpec{payload: 3000, mss: 1448}.build()
	l4, _ := Validate(&h4, f4, allHost)
	f6, h6 := frameSpec{v6: true, payload: 3000, mss: 1428}.build()
	l6, _ := Validate(&h6, f6, allHost)
	fu, hu := frameSpec{v6: true, udp: true, payload: 3000, mss: 1000}.build()
	lu, _ := Validate(&hu, fu, allHost)
	csum := Header{Flags: FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}
	ecn := h4
	ecn.GSOType |= GSOECN
	ufo := hu
	ufo.GSOType = GSOUDP
	allGuest := FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN | FeatureGuestUFO | FeatureGuestUSO4 | FeatureGuestUSO6
	passGSO := func(h Header, l Layout) Header {
		return Header{Flags: FlagNeedsCsum, GSOType: h.GSOType, HdrLen: uint16(l.Payload), GSOSize: h.GSOSize, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}
	}
	cases := []struct {
		name string
		h    Header
		l    Layout
		rx   Features
		want Header
		act  Action
	}{
		{"plain", Header{}, Layout{}, 0, Header{}, ActionPass},
		{"plain to offload guest", Header{}, Layout{}, allGuest, Header{}, ActionPass},
		{"csum to guest_csum", csum, Layout{}, FeatureGuestCsum, csum, ActionPass},
		{"data_valid to guest_csum", Header{Flags: FlagDataValid}, Layout{}, FeatureGuestCsum, Header{Flags: FlagDataValid}, ActionPass},
		{"data_valid to no offloads", Header{Flags: FlagDataValid}, Layout{}, FeatureGuestTSO4, Header{}, ActionPass},
		{"csum to no offloads", csum, Layout{}, 0, Header{}, ActionComplete},
		{"tso4 to tso4", h4, l4, allGuest, passGSO(h4, l4), ActionPass},
		{"tso4 to tso6 only", h4, l4, FeatureGuestCsum | FeatureGuestTSO6, Header{Flags: FlagDataValid}, ActionSegment},
		{"tso4 without guest_csum", h4, l4, FeatureGuestTSO4, Header{}, ActionSegment},
		{"tso4 to no offloads", h4, l4, 0, Header{}, ActionSegment},
		{"tso6 to tso6", h6, l6, FeatureGuestCsum | FeatureGuestTSO6, passGSO(h6, l6), ActionPass},
		{"ecn to no guest_ecn", ecn, l4, allGuest &^ FeatureGuestECN, Header{Flags: FlagDataValid}, ActionSegment},
		{"ecn to guest_ecn", ecn, l4, allGuest, passGSO(ecn, l4), ActionPass},
		{"uso6 to uso6", hu, lu, FeatureGuestCsum | FeatureGuestUSO6, passGSO(hu, lu), ActionPass},
		{"uso6 to uso4 only", hu, lu, FeatureGuestCsum | FeatureGuestUSO4, Header{Flags: FlagDataValid}, ActionSegment},
		{"ufo to ufo", ufo, lu, allGuest, passGSO(ufo, lu), ActionPass},
		{"ufo to no ufo", ufo, lu, allGuest &^ FeatureGuestUFO, Header{}, ActionDrop},
	}
	for _, c := range cases {
		got, act := ForReceiver(&c.h, c.l, c.rx)
		if got != c.want || act != c.act {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, got, act, c.want, c.act)
		}
	}
	if ActionSegment.String() != "segment" || Action(9).String() != "unknown" {
		t.Fatal("action names")
	}
}

// TestSetPseudoSum: the field holds the pseudo header's sum without the
// length (DPDK's TSO convention) or with it (virtio's), which differ by
// the length; the uplink's peer tests check the values against DPDK.
func TestSetPseudoSum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		f, h := frameSpec{v6: v6, payload: 3000, mss: 1448}.build()
		l, r := Validate(&h, f, allHost)
		if r != ReasonOK {
			t.Fatal(r)
		}
		if !SetPseudoSum(f, l, false, 0) {
			t.Fatal("SetPseudoSum without length")
		}
		without := f[l.L4Off+16 : l.L4Off+18]
		if want := uint16(len(f) - l.L4Off); int(without[0])<<8|int(without[1]) == 0 || want == 0 {
			t.Fatal("empty sums")
		}
		// Adding the length to the length-less sum gives back the one
		// with it (what DPDK's virtio driver does).
		a := uint32(without[0])<<8 | uint32(without[1])
		a += uint32(len(f) - l.L4Off)
		a = a&0xffff + a>>16
		SetPseudoSum(f, l, true, len(f)-l.L4Off)
		b := uint32(f[l.L4Off+16])<<8 | uint32(f[l.L4Off+17])
		if a != b {
			t.Errorf("v6 %v: %#x + length = %#x, want %#x", v6, a, a, b)
		}
		if SetPseudoSum(f[:l.L4Off+10], l, true, 1) {
			t.Error("SetPseudoSum wrote beyond a short frame")
		}
	}
}
