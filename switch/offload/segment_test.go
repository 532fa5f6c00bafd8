package offload

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestSegmentSynthetic(t *testing.T) {
	for _, sp := range []frameSpec{
		{payload: 65000, mss: 1448},
		{payload: 1448 * 3, mss: 1448}, // exact multiple: no short tail
		{payload: 1, mss: 1448},        // one segment
		{v6: true, payload: 30000, mss: 1428, vlan: true},
		{udp: true, payload: 9000, mss: 1472},
		{udp: true, v6: true, payload: 9000, mss: 1452},
		{ipOpts: 40, payload: 5000, mss: 536},
	} {
		f, h := sp.build()
		l, r := Validate(&h, f, allHost)
		if r != ReasonOK {
			t.Fatalf("%+v: %v", sp, r)
		}
		segs := checkSegments(t, &h, f, l)
		want := (sp.payload + int(sp.mss) - 1) / int(sp.mss)
		if len(segs) != want {
			t.Fatalf("%+v: %d segments, want %d", sp, len(segs), want)
		}
		if sp.udp {
			for i, s := range segs {
				if got := int(binary.BigEndian.Uint16(s[l.L4Off+4:])); got != len(s)-l.L4Off {
					t.Fatalf("udp segment %d: length %d", i, got)
				}
			}
			continue
		}
		seq0 := binary.BigEndian.Uint32(f[l.L4Off+4:])
		off := uint32(0)
		for i, s := range segs {
			if got := binary.BigEndian.Uint32(s[l.L4Off+4:]); got != seq0+off {
				t.Fatalf("segment %d: seq %#x, want %#x", i, got, seq0+off)
			}
			off += uint32(len(s) - l.Payload)
			flags := s[l.L4Off+13]
			last := i == len(segs)-1
			if (flags&tcpFIN != 0) != last || (flags&tcpPSH != 0) != last {
				t.Fatalf("segment %d of %d: flags %#x (FIN/PSH only on the last)", i, len(segs), flags)
			}
			if (flags&tcpCWR != 0) != (i == 0) {
				t.Fatalf("segment %d: flags %#x (CWR only on the first)", i, flags)
			}
			if flags&0x10 == 0 {
				t.Fatalf("segment %d: ACK lost", i)
			}
			if !sp.v6 {
				id := binary.BigEndian.Uint16(s[l.L3Off+4:])
				if id != 0xfff0+uint16(i) {
					t.Fatalf("segment %d: IP ID %#x", i, id)
				}
				if s[l.L3Off+6] != 0x40 {
					t.Fatalf("segment %d: DF lost", i)
				}
			}
		}
	}
}

func TestSegmentErrors(t *testing.T) {
	f, h := frameSpec{payload: 3000, mss: 1448}.build()
	l, _ := Validate(&h, f, allHost)
	var s Segmenter
	if _, err := s.Next(make([]byte, 2000)); err != io.EOF {
		t.Fatalf("zero Segmenter: %v", err)
	}
	if err := s.Reset(&h, f, l); err != nil {
		t.Fatal(err)
	}
	short := make([]byte, s.MaxSegmentLen()-1)
	if n, err := s.Next(short); n != 0 || !errors.Is(err, ErrShortBuffer) {
		t.Fatalf("short buffer: %d, %v", n, err)
	}
	for _, b := range short {
		if b != 0 {
			t.Fatal("short buffer written")
		}
	}
	// A layout that Validate did not produce is refused, not trusted.
	bad := []Layout{{}, {L3Off: 14, L4Off: 34, Payload: len(f) + 10, L4Proto: protoTCP}, {L3Off: 14, L4Off: 20, Payload: 40, L4Proto: protoTCP}}
	for _, b := range bad {
		if err := s.Reset(&h, f, b); !errors.Is(err, ErrNotSegmentable) {
			t.Fatalf("layout %+v: %v", b, err)
		}
		if s.Segments() != 0 {
			t.Fatal("refused Reset left segments")
		}
	}
	ufo := h
	ufo.GSOType = GSOUDP
	if err := s.Reset(&ufo, f, l); !errors.Is(err, ErrNotSegmentable) {
		t.Fatalf("ufo: %v", err)
	}
}

func TestSegmentNoAllocs(t *testing.T) {
	f, h := frameSpec{payload: 65000, mss: 1448}.build()
	l, _ := Validate(&h, f, allHost)
	var s Segmenter
	buf := make([]byte, 1600)
	n := testing.AllocsPerRun(20, func() {
		_ = s.Reset(&h, f, l)
		for {
			if _, err := s.Next(buf); err != nil {
				break
			}
		}
	})
	if n != 0 {
		t.Fatalf("%v allocs", n)
	}
}
