//go:build vhostd_bugprobe

package vswitch

import "bytes"

// A vhostd built with -tags vhostd_bugprobe has a bug on purpose, for the
// end-to-end test of what a bug a guest's frames reach costs
// (test/hostile TestInternalError): a frame with ethertype BugProbeType
// whose payload starts with BugProbeMagic makes forward index out of
// range. Release builds have none of it (bugprobe_off.go).

// BugProbeType and BugProbeMagic mark the frame that trips the probe.
const BugProbeType = 0x88b5 // IEEE local experimental ethertype 1

// BugProbeMagic is the payload that trips the probe.
var BugProbeMagic = []byte("vhostd-bugprobe")

// probeBug panics with a runtime error if one of the first n frames of b
// is the probe frame.
func probeBug(b *Burst, n int) {
	var h [14 + 15]byte
	for i := 0; i < n; i++ {
		f := &b.Frames[i]
		if f.Len < len(h) || Gather(h[:], f.Segs) < len(h) {
			continue
		}
		if int(h[12])<<8|int(h[13]) == BugProbeType && bytes.Equal(h[14:], BugProbeMagic) {
			var none []int
			_ = none[i+1]
		}
	}
}
