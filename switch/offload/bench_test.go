package offload

import (
	"fmt"
	"testing"
)

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{64, 1500, 65536} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				CompleteChecksum(buf, 0, 16)
			}
		})
	}
}

// BenchmarkSegmentTCPv4 cuts the largest TCPv4 super-frame (IP length
// 65535, 65483 bytes of payload) into 1448-byte segments: 46 frames,
// each copied and fully checksummed. Bytes/s counts payload.
func BenchmarkSegmentTCPv4(b *testing.B) {
	f, h := frameSpec{payload: 65535 - 20 - 32, mss: 1448}.build()
	l, r := Validate(&h, f, allHost)
	if r != ReasonOK {
		b.Fatal(r)
	}
	var s Segmenter
	buf := make([]byte, 2048)
	b.SetBytes(int64(len(f) - l.Payload))
	b.ReportAllocs()
	segs := 0
	for b.Loop() {
		_ = s.Reset(&h, f, l)
		for {
			if _, err := s.Next(buf); err != nil {
				break
			}
			segs++
		}
	}
	b.ReportMetric(float64(s.Segments()), "segs/op")
}

// BenchmarkCopy64K is the bare memory copy of the same payload in the same
// 1448-byte pieces, the floor segmentation is measured against.
func BenchmarkCopy64K(b *testing.B) {
	f, _ := frameSpec{payload: 65535 - 20 - 32, mss: 1448}.build()
	buf := make([]byte, 2048)
	b.SetBytes(int64(len(f) - 66))
	b.ReportAllocs()
	for b.Loop() {
		for off := 66; off < len(f); off += 1448 {
			copy(buf, f[off:min(off+1448, len(f))])
		}
	}
}

func BenchmarkValidateTCPv4(b *testing.B) {
	f, h := frameSpec{payload: 65535 - 20 - 32, mss: 1448}.build()
	b.ReportAllocs()
	for b.Loop() {
		if _, r := Validate(&h, f, allHost); r != ReasonOK {
			b.Fatal(r)
		}
	}
}
