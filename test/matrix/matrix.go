// Package matrix runs real vhost-user frontends against vhostd once per
// feature combination that matters, and reports what each negotiated and
// whether traffic crossed: the "feature matrix" of issue 16.
//
// A combination names the virtio features masked on both of vhostd's ports
// (--socket NAME=PATH,disable=FEAT+FEAT) and, for DPDK's virtio_user, the
// features the frontend itself turns off. Each combination runs with each
// frontend: DPDK's virtio_user in dpdk-testpmd (a fixed count of frames
// each way, counters must match exactly) and two Linux guests under QEMU
// (pings of 56, 1400 and 4000 bytes both ways). The list is data: a
// feature vhostd starts to offer joins as a no-FEAT row by itself.
//
// The package is a library for cmd/vhostd-matrix (make matrix, the full
// run) and for TestMatrixReduced (make e2e, a few rows with both
// frontends). It is not a benchmark: rows say pass or fail, not how fast.
package matrix

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vhostd/vhostd/vhost"
)

// Frontend is the vhost-user frontend of a row.
type Frontend string

const (
	// Testpmd is DPDK's virtio_user (net_virtio_user vdevs in dpdk-testpmd).
	Testpmd Frontend = "testpmd"
	// QEMU is two Linux guests (virtio-net driver) under QEMU TCG.
	QEMU Frontend = "qemu"
)

// Frontends lists every frontend, in the order rows are run.
var Frontends = []Frontend{Testpmd, QEMU}

// Combination is one feature setting to run.
type Combination struct {
	// Name identifies the row ("baseline", "no-mrg_rxbuf", ...); it is
	// used in file names, so it holds only [a-z0-9_+-].
	Name string
	// Disable are the features vhostd masks on both ports (names from
	// vhost.Maskable).
	Disable []string
	// FrontendOff are features the frontend itself turns off, for
	// frontends that can (testpmd: "mrg_rxbuf", "in_order"). A row with
	// FrontendOff runs only with such frontends.
	FrontendOff []string
	// Packed makes the frontend ask for packed virtqueues (testpmd
	// packed_vq=1, QEMU's device packed=on): both frontends only use
	// them when asked. The row fails unless ring_packed is acked.
	Packed bool
	// QueuePairs is how many queue pairs the frontend asks for (testpmd
	// queues=, QEMU queues= with as many vCPUs, so Linux uses them all);
	// 0 means 1. vhostd then runs as many pollers, so each pair has a
	// lane of its own and traffic must cross every queue.
	QueuePairs int
	// Why says what the combination exercises, for the documentation.
	Why string
}

// Queues returns c.QueuePairs, at least 1.
func (c Combination) Queues() int { return max(c.QueuePairs, 1) }

// DisableArg is the value of the --socket option's disable= (features
// joined by "+"), empty for none.
func (c Combination) DisableArg() string { return strings.Join(c.Disable, "+") }

// Runs tells whether the combination runs with frontend f.
func (c Combination) Runs(f Frontend) bool {
	return len(c.FrontendOff) == 0 || f == Testpmd
}

// frontendKnobs are the features testpmd's virtio_user can turn off
// itself (testpmd.Port's MrgRxbuf and InOrder).
var frontendKnobs = []string{"mrg_rxbuf", "in_order"}

// Pairs are the masked pairs whose features interact: the header layout
// (mrg_rxbuf decides its size, version_1 whether it is always 12 bytes),
// the notification paths (event_idx) with indirect tables, several queue
// pairs with in-order use, and the offloads of both directions.
var Pairs = [][2]string{
	{"mrg_rxbuf", "version_1"},
	{"event_idx", "indirect_desc"},
	{"mq", "in_order"},
	// Offloads: checksums both ways off (frames then carry no partial
	// checksum at all), and segmentation both ways off with checksums
	// still on (vhostd completes what a peer without TSO cannot take).
	{"csum", "guest_csum"},
	{"host_tso4", "guest_tso4"},
}

// Combinations returns the full matrix: the baseline (nothing masked),
// each of maskable masked alone, the interacting Pairs (those whose
// features are both maskable), two queue pairs in use (with and without
// in_order), packed rings (alone, with the features whose packed form
// differs masked, and with two queue pairs), and the baseline with each
// frontend knob of testpmd off.
// maskable is vhost.Maskable() outside tests.
func Combinations(maskable []string) []Combination {
	out := []Combination{{Name: "baseline", Why: "every feature vhostd offers"}}
	for _, f := range maskable {
		out = append(out, Combination{Name: "no-" + f, Disable: []string{f}, Why: f + " masked by vhostd"})
	}
	for _, p := range Pairs {
		if !slices.Contains(maskable, p[0]) || !slices.Contains(maskable, p[1]) {
			continue
		}
		out = append(out, Combination{Name: "no-" + p[0] + "+" + p[1], Disable: []string{p[0], p[1]},
			Why: p[0] + " and " + p[1] + " masked together"})
	}
	// Several queue pairs in use (the rows above run one): alone, and
	// with in_order masked (the mq x in_order pair, with mq in effect).
	out = append(out, Combination{Name: "mq2", QueuePairs: 2, Why: "two queue pairs used by the frontend, nothing masked"})
	if slices.Contains(maskable, "in_order") {
		out = append(out, Combination{Name: "mq2+no-in_order", QueuePairs: 2, Disable: []string{"in_order"},
			Why: "two queue pairs used by the frontend, in_order masked"})
	}
	// Packed rings, asked for by the frontend: alone, and with each
	// feature whose packed-ring form differs from the split one masked
	// (event suppression, indirect tables, in-order use, merged
	// receive buffers), and with two queue pairs.
	// Only when vhostd offers them (ring_packed is maskable then).
	if slices.Contains(maskable, "ring_packed") {
		out = append(out, Combination{Name: "packed", Packed: true, Why: "packed virtqueues, nothing masked"})
		for _, f := range []string{"event_idx", "indirect_desc", "in_order", "mrg_rxbuf"} {
			if slices.Contains(maskable, f) {
				out = append(out, Combination{Name: "packed+no-" + f, Packed: true, Disable: []string{f},
					Why: "packed virtqueues, " + f + " masked"})
			}
		}
		out = append(out, Combination{Name: "packed+mq2", Packed: true, QueuePairs: 2, Why: "packed virtqueues, two queue pairs"})
	}
	for _, k := range frontendKnobs {
		out = append(out, Combination{Name: "fe-no-" + k, FrontendOff: []string{k},
			Why: k + " turned off by the frontend (testpmd " + k + "=0), nothing masked"})
	}
	return out
}

// DefaultCombinations is Combinations(vhost.Maskable()).
func DefaultCombinations() []Combination { return Combinations(vhost.Maskable()) }

// Reduced is the subset make test runs with both frontends.
var Reduced = []string{"baseline", "no-mrg_rxbuf", "no-mrg_rxbuf+version_1", "no-event_idx+indirect_desc", "mq2", "packed"}

// Select returns the combinations of all named in names, in the order of
// names; an unknown name is an error.
func Select(all []Combination, names []string) ([]Combination, error) {
	var out []Combination
	for _, n := range names {
		i := slices.IndexFunc(all, func(c Combination) bool { return c.Name == n })
		if i < 0 {
			var known []string
			for _, c := range all {
				known = append(known, c.Name)
			}
			return nil, fmt.Errorf("unknown combination %q (known: %s)", n, strings.Join(known, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}
