package offload

import (
	"io"
	"testing"
)

// FuzzValidate feeds arbitrary header and frame bytes and features through
// Validate and, for what it accepts, through checksum completion or
// segmentation into fixed buffers: no panic, nothing written past an output
// buffer, and every segment a well-formed frame whose lengths add up (see
// checkSegments).
func FuzzValidate(f *testing.F) {
	add := func(h Header, frame []byte, feat Features) {
		b := make([]byte, HeaderLen, HeaderLen+len(frame))
		h.Encode(b)
		f.Add(append(b, frame...), uint64(feat))
	}
	for _, sp := range []frameSpec{
		{payload: 3000, mss: 1000},
		{v6: true, hopByHop: true, payload: 2000, mss: 700},
		{udp: true, vlan: true, payload: 1500, mss: 600},
		{udp: true, v6: true, payload: 900, mss: 300},
		{ipOpts: 8, payload: 100, mss: 33, ecn: true},
	} {
		fr, h := sp.build()
		add(h, fr, allHost)
	}
	// A few of Linux's own frames: small ones with a partial checksum and
	// a short super-frame of each family.
	for _, file := range captureFiles {
		in, _ := readCapture(f, file)
		n := 0
		for _, r := range in {
			if len(r.frame) <= 3000 {
				add(r.hdr, r.frame, allHost)
				n++
			}
		}
		if n == 0 {
			f.Fatalf("%s: no small seed", file)
		}
	}
	f.Add([]byte{}, uint64(0))
	f.Add(make([]byte, 40), ^uint64(0))

	f.Fuzz(func(t *testing.T, data []byte, feat uint64) {
		var h Header
		if !h.Decode(data) {
			return
		}
		hl := HeaderLen
		if len(data) < HeaderLen {
			hl = HeaderLenLegacy
		}
		frame := data[hl:]
		orig := string(frame)
		l, r := Validate(&h, frame, Features(feat))
		if r >= numReasons {
			t.Fatalf("reason %d out of range", r)
		}
		if string(frame) != orig {
			t.Fatal("Validate wrote to the frame")
		}
		if r != ReasonOK {
			return
		}
		if h.Flags&FlagNeedsCsum != 0 && h.GSO() == GSONone {
			start, off := int(h.CsumStart), int(h.CsumOffset)
			buf := make([]byte, len(frame)+8)
			copy(buf, frame)
			want := ^refSum(frame[start:])
			if want == 0 {
				want = 0xffff // stored as all ones, as Linux does
			}
			if !CompleteChecksum(buf[:len(frame)], start, off) {
				t.Fatal("validated checksum field refused")
			}
			if got := uint16(buf[start+off])<<8 | uint16(buf[start+off+1]); got != want {
				t.Fatalf("checksum %#x, want %#x", got, want)
			}
			for _, b := range buf[len(frame):] {
				if b != 0 {
					t.Fatal("checksum written past the frame")
				}
			}
		}
		if g := h.GSO(); g == GSOTCPv4 || g == GSOTCPv6 || g == GSOUDPL4 {
			checkSegments(t, &h, frame, l)
			// And once more into a reused buffer of a fixed size.
			var s Segmenter
			if err := s.Reset(&h, frame, l); err != nil {
				t.Fatal(err)
			}
			var fixed [1 << 17]byte // more than any frame Validate accepts
			total := 0
			for {
				n, err := s.Next(fixed[:])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				total += n - l.Payload
			}
			if total != len(frame)-l.Payload {
				t.Fatalf("segments carry %d payload bytes of %d", total, len(frame)-l.Payload)
			}
		}
	})
}
