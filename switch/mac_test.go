package vswitch

import "testing"

// TestMacsOf: the two-load reading of a header's addresses agrees with
// macOf byte by byte, whatever the bytes.
func TestMacsOf(t *testing.T) {
	b := make([]byte, 14)
	for i := 0; i < 1000; i++ {
		for j := range b {
			b[j] = byte(i*31 + j*j*7 + i>>3)
		}
		if i%7 == 0 {
			copy(b, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		}
		dst, src := macsOf(b[:12])
		if dst != macOf(b) || src != macOf(b[6:]) {
			t.Fatalf("% x: macsOf %v %v, macOf %v %v", b, dst, src, macOf(b), macOf(b[6:]))
		}
	}
}
