package matrix

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/vhostd/vhostd/vhost"
)

// Row is the outcome of one combination with one frontend.
type Row struct {
	Combination Combination
	Frontend    Frontend
	// Features and ProtocolFeatures are what port a acked (vhostctl
	// ports); FeaturesB and ProtocolFeaturesB port b's, which should be
	// the same.
	Features, ProtocolFeatures   []string
	FeaturesB, ProtocolFeaturesB []string
	// Sent and Received count frames (testpmd: both ports together) or
	// pings (QEMU: echo requests sent, replies received, both guests).
	Sent, Received uint64
	// SentBytes and ReceivedBytes are testpmd's byte counters (both
	// ports); zero for QEMU.
	SentBytes, ReceivedBytes uint64
	// VhostRx and VhostTx are vhostd's frame counters over both ports,
	// VhostRxBytes and VhostTxBytes its byte counters.
	VhostRx, VhostTx           uint64
	VhostRxBytes, VhostTxBytes uint64
	// Drops are vhostd's drop counters by reason, both ports added up,
	// non-zero ones only, over the counted traffic; EarlyDrops those
	// before it (while the frontends set up: a guest's first frames to a
	// peer whose driver is not ready yet), which fail nothing.
	Drops, EarlyDrops map[string]uint64
	// QueueFrames are vhostd's frame counters per queue of ports a and
	// b (vhostctl stats), "port:rxK" for what it took from transmit
	// queue pair K (the lane serving it) and "port:txK" for what it put
	// into receive queue K; RunningRings the rings running on port a
	// and on port b. Both are read only for rows with several queue
	// pairs.
	QueueFrames  map[string]uint64
	RunningRings [2]int
	// Violations are the frontends' violations of the specifications
	// that vhostd reported for ports a and b (vhostctl ports --detail),
	// as "port:kind" (data path) or "port:REQUEST" (control path) to the
	// times seen. They fail nothing: they are findings.
	Violations map[string]uint64
	// Err is why the run could not finish (a frontend that did not start,
	// a link that did not come up, ...); empty if it did.
	Err string
	// Pass and Why are Judge's verdict.
	Pass bool
	Why  string
	// Trace is the file holding the vhost-user trace of a failing row
	// (relative to the table), empty for a passing one; Events the trace
	// itself, both ports, in the order received.
	Trace  string
	Events []vhost.TraceEvent
	// Elapsed is how long the row took, setup included.
	Elapsed time.Duration
}

// ID names the row in file names: combination and frontend.
func (r *Row) ID() string { return r.Combination.Name + "-" + string(r.Frontend) }

// TotalDrops adds up r.Drops.
func (r *Row) TotalDrops() uint64 {
	var n uint64
	for _, v := range r.Drops {
		n += v
	}
	return n
}

// Judge sets r.Pass and r.Why from what was measured: the run finished,
// both ports negotiated the same features, no masked feature (and no
// feature the frontend turned off) was acked, everything sent arrived,
// vhostd dropped nothing, and for testpmd vhostd's counters match the
// frontend's exactly (for QEMU they also hold the guests' ARP and other
// frames, so only the pings are compared).
func Judge(r *Row) {
	r.Pass, r.Why = judge(r)
}

func judge(r *Row) (bool, string) {
	if r.Err != "" {
		return false, r.Err
	}
	if len(r.Features) == 0 {
		if r.Sent > 0 && !sentSetFeatures(r.Events) {
			why := fmt.Sprintf("the frontend never sent SET_FEATURES, yet started its rings: %d/%d sent came back over rings with no features acked", r.Received, r.Sent)
			if r.Frontend == Testpmd && r.VhostRxBytes != r.SentBytes {
				why += fmt.Sprintf("; vhostd counted %d bytes received where the frontend sent %d: the two sides use different virtio-net header sizes",
					r.VhostRxBytes, r.SentBytes)
			}
			return false, why
		}
		return false, "no features acked (negotiation did not finish)"
	}
	if !slices.Equal(r.Features, r.FeaturesB) || !slices.Equal(r.ProtocolFeatures, r.ProtocolFeaturesB) {
		return false, fmt.Sprintf("ports a and b acked different features: %s / %s", strings.Join(r.Features, ","), strings.Join(r.FeaturesB, ","))
	}
	for _, f := range r.Combination.Disable {
		if slices.Contains(r.Features, f) {
			return false, "masked feature " + f + " was acked"
		}
	}
	if r.Combination.Packed && !slices.Contains(r.Features, "ring_packed") {
		return false, "the frontend asked for packed rings, ring_packed was not acked"
	}
	for _, f := range r.Combination.FrontendOff {
		if slices.Contains(r.Features, f) {
			return false, "feature " + f + " acked though the frontend turned it off"
		}
	}
	unit := "frames"
	if r.Frontend == QEMU {
		unit = "pings"
	}
	if r.Sent == 0 {
		return false, "nothing sent"
	}
	if r.Received != r.Sent {
		return false, fmt.Sprintf("%d of %d %s came back", r.Received, r.Sent, unit)
	}
	if d := r.TotalDrops(); d != 0 {
		return false, fmt.Sprintf("vhostd dropped %d frames (%s)", d, FormatDrops(r.Drops))
	}
	if r.Frontend == Testpmd && (r.VhostRx != r.Sent || r.VhostTx != r.Received) {
		return false, fmt.Sprintf("vhostd counted rx %d tx %d, frontend sent %d received %d", r.VhostRx, r.VhostTx, r.Sent, r.Received)
	}
	if r.Frontend == Testpmd && (r.VhostRxBytes != r.SentBytes || r.VhostTxBytes != r.ReceivedBytes) {
		return false, fmt.Sprintf("vhostd counted rx %d tx %d bytes, frontend sent %d received %d (header layouts disagree?)",
			r.VhostRxBytes, r.VhostTxBytes, r.SentBytes, r.ReceivedBytes)
	}
	why := fmt.Sprintf("%d/%d %s", r.Received, r.Sent, unit)
	if q := r.Combination.Queues(); q > 1 {
		for i, n := range r.RunningRings {
			if n != 2*q {
				return false, fmt.Sprintf("port %c runs %d rings, want %d (%d queue pairs)", 'a'+i, n, 2*q, q)
			}
		}
		// testpmd transmits on every queue; a guest's pings leave on
		// the queue of the vCPU that sends them, so not all need carry.
		if r.Frontend == Testpmd {
			for _, p := range []string{"a", "b"} {
				for k := range q {
					for _, d := range []string{"rx", "tx"} {
						if key := fmt.Sprintf("%s:%s%d", p, d, k); r.QueueFrames[key] == 0 {
							return false, fmt.Sprintf("%s: queue %s%d carried nothing (queues: %s)", p, d, k, FormatDrops(r.QueueFrames))
						}
					}
				}
			}
		}
		why += "; queues: " + FormatDrops(r.QueueFrames)
	}
	return true, why
}

// sentSetFeatures tells whether the trace holds a SET_FEATURES request.
func sentSetFeatures(events []vhost.TraceEvent) bool {
	return slices.ContainsFunc(events, func(e vhost.TraceEvent) bool {
		return e.Kind == vhost.TraceRequest && e.Request == "SET_FEATURES"
	})
}

// FormatDrops is "reason=n reason=n", sorted by reason; "-" if none.
func FormatDrops(d map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(d)) {
		if d[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, d[k]))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// AddDrops adds the non-zero counters of src to *dst (made if nil).
func AddDrops(dst *map[string]uint64, src map[string]uint64) {
	for k, v := range src {
		if v == 0 {
			continue
		}
		if *dst == nil {
			*dst = map[string]uint64{}
		}
		(*dst)[k] += v
	}
}
