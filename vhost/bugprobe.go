//go:build vhostd_bugprobe

package vhost

// A vhostd built with -tags vhostd_bugprobe has a bug on purpose, for the
// end-to-end test of what a bug a frontend's requests reach costs
// (test/hostile TestInternalError): SET_VRING_NUM with the size
// BugProbeNum makes handle index out of range. Release builds have none
// of it (bugprobe_off.go).

// BugProbeNum is the ring size that trips the probe.
const BugProbeNum = 0xb5b5

// probeRequest panics with a runtime error if m is the probe request.
func probeRequest(m *Message) {
	if m.Request == SetVringNum && len(m.Payload) >= 8 && m.vringState().Num == BugProbeNum {
		var none []int
		_ = none[len(m.Payload)]
	}
}
