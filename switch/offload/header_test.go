package offload

import "testing"

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Flags: FlagNeedsCsum, GSOType: GSOTCPv6 | GSOECN, HdrLen: 0x0102, GSOSize: 0x0304, CsumStart: 0x0506, CsumOffset: 0x0708, NumBuffers: 0x090a}
	var b [12]byte
	if n := h.Encode(b[:]); n != 12 {
		t.Fatalf("Encode 12: %d", n)
	}
	want := [12]byte{1, 0x84, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 9}
	if b != want {
		t.Fatalf("wire % x, want % x", b, want)
	}
	var g Header
	if !g.Decode(b[:]) || g != h {
		t.Fatalf("decode %+v, want %+v", g, h)
	}
	if g.GSO() != GSOTCPv6 {
		t.Fatalf("GSO() %d", g.GSO())
	}
	// The legacy layout has no num_buffers.
	var l [11]byte
	if n := h.Encode(l[:]); n != 10 || l[10] != 0 {
		t.Fatalf("Encode 10: %d, % x", n, l)
	}
	if !g.Decode(l[:10]) || g.NumBuffers != 0 || g.CsumOffset != h.CsumOffset {
		t.Fatalf("decode 10: %+v", g)
	}
	if g.Decode(l[:9]) || h.Encode(l[:9]) != 0 {
		t.Fatal("9 bytes accepted")
	}
	if n := testing.AllocsPerRun(100, func() { h.Encode(b[:]); g.Decode(b[:]) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for r := Reason(0); r < numReasons; r++ {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Fatalf("reason %d: name %q", r, s)
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				t.Fatalf("reason %q is not snake_case", s)
			}
		}
		seen[s] = true
	}
	if Reason(200).String() != "unknown" || ReasonOK.String() != "ok" {
		t.Fatal("out-of-range or ok name")
	}
}

func TestDrops(t *testing.T) {
	var d Drops
	d.Add(ReasonOK)
	d.Add(ReasonGSOSizeZero)
	d.Add(ReasonGSOSizeZero)
	d.Add(Reason(250))
	if d.Load(ReasonGSOSizeZero) != 2 || d.Load(ReasonOK) != 0 || d.Load(Reason(250)) != 0 {
		t.Fatal("counts")
	}
	seen, total := 0, uint64(0)
	d.Each(func(r Reason, n uint64) { seen++; total += n })
	if seen != NumReasons-1 || total != 2 {
		t.Fatalf("Each: %d reasons, total %d", seen, total)
	}
	if n := testing.AllocsPerRun(100, func() { d.Add(ReasonHdrLenBeyondFrame) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}
