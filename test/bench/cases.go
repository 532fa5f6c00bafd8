package main

import (
	"fmt"
	"strconv"
	"strings"
)

// Topology is the path frames take between the generator's two ports.
type Topology string

const (
	// VMToVM: generator port 0 = VM A on socket a, port 1 = VM B on
	// socket b; the backend switches between the two sockets.
	VMToVM Topology = "vm-vm"
	// VMUplink: generator port 0 = VM A on socket a, port 1 = the DPDK
	// peer on the far side of the backend's uplink, on socket u, which
	// the backend's uplink device (a net_vhost ethdev inside it) serves.
	// Every frame crosses the backend once, VM -> uplink or uplink -> VM.
	// The "VM-to-uplink-to-VM" (a peer reflecting frames back
	// through the uplink) cannot be built for a learning switch: the
	// frames would come back with the MACs they left with, from the
	// other side, and the switch would move the MACs between ports on
	// every frame.
	VMUplink Topology = "vm-uplink"
)

// Title is the topology's name in report headings and plots.
func (t Topology) Title() string {
	switch t {
	case VMUplink:
		return "VM-to-uplink"
	default:
		return "VM-to-VM"
	}
}

// Case is one traffic pattern measured on every backend.
type Case struct {
	// Frame is the Ethernet frame size in bytes including the 4-byte FCS
	// (RFC 2544 sizes: 64 and 1518). Virtio carries no FCS, so the
	// generator sends Frame-4 bytes.
	Frame int
	// MrgRxbuf is VIRTIO_NET_F_MRG_RXBUF, set on the generator's vdevs
	// and so negotiated with every backend.
	MrgRxbuf bool
	// Topology is the frame path.
	Topology Topology
	// Queues is the queue pairs per generator port (1 by default).
	Queues int
	// Pollers is vhostd's --pollers (0 = vhostd's default); other
	// backends ignore it.
	Pollers int
	// Huge runs the DPDK processes (generator, dpdk-io, OVS) on 2 MiB
	// hugepages; vhostd maps the generator's memory, so it follows.
	Huge bool
	// Packed has the generator ask for packed virtqueues (packed_vq=1),
	// which every backend here offers (VIRTIO_F_RING_PACKED).
	Packed bool
	// TSO is the TSO section's case (TSOCase): 64 KiB TCP segments with
	// TSO metadata, sent by tsogen; backends enable their TSO support.
	TSO bool
}

// Name is a short stable label: "64B mrg=on", with " q2 p2" when the
// pollers are set (the multi-queue section) and the topology when it is
// not VM-to-VM.
func (c Case) Name() string {
	if c.TSO {
		return "64KiB TCP segments tso"
	}
	s := fmt.Sprintf("%dB mrg=%s", c.Frame, onOff(c.MrgRxbuf))
	if c.Queues > 1 || c.Pollers > 0 {
		s += fmt.Sprintf(" q%d p%d", max(c.Queues, 1), max(c.Pollers, 1))
	}
	if c.Topology != VMToVM && c.Topology != "" {
		s += " " + string(c.Topology)
	}
	if c.Huge {
		s += " huge"
	}
	if c.Packed {
		s += " packed"
	}
	return s
}

// Mem names the case's memory configuration: "4K" (no hugepages) or "2M".
func (c Case) Mem() string {
	if c.Huge {
		return "2M"
	}
	return "4K"
}

// TxPkts is the generator's --txpkts: the frame without FCS.
func (c Case) TxPkts() int { return c.Frame - 4 }

// Gbps converts a frame rate into gigabits per second of frames of this
// case's size (FCS included, preamble and inter-frame gap not).
func (c Case) Gbps(pps float64) float64 { return pps * float64(c.Frame) * 8 / 1e9 }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// ParseFrames parses a comma-separated list of frame sizes ("64,1518").
func ParseFrames(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 64 || n > 1518 {
			return nil, fmt.Errorf("frame size %q: want 64..1518", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no frame sizes in %q", s)
	}
	return out, nil
}

// ParseOnOff parses a comma-separated list of "on"/"off".
func ParseOnOff(s string) ([]bool, error) {
	var out []bool
	for _, f := range splitList(s) {
		switch f {
		case "on", "1", "true":
			out = append(out, true)
		case "off", "0", "false":
			out = append(out, false)
		default:
			return nil, fmt.Errorf("%q: want on or off", f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no values in %q", s)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Cases builds one topology's matrix: every frame size with every
// mrg_rxbuf setting and every memory configuration (huge: false for no
// hugepages, true for hugepages; the two of one case side by side), one
// queue pair, vhostd's default pollers.
func Cases(frames []int, mrg []bool, huge []bool, t Topology) []Case {
	var out []Case
	for _, f := range frames {
		for _, m := range mrg {
			for _, h := range huge {
				out = append(out, Case{Frame: f, MrgRxbuf: m, Topology: t, Queues: 1, Huge: h})
			}
		}
	}
	return out
}

// CasesOf returns the cases of topology t, in order.
func CasesOf(cases []Case, t Topology) []Case {
	var out []Case
	for _, c := range cases {
		if c.Topology == t {
			out = append(out, c)
		}
	}
	return out
}

// PackedCases are the packed-ring cases (VM-to-VM, one queue pair, no
// hugepages): each frame size with mergeable buffers mrg. Each is the
// split case of the same name without " packed", which the main table
// measures in the same run, with the generator's packed_vq=1.
func PackedCases(frames []int, mrg bool) []Case {
	var out []Case
	for _, f := range frames {
		out = append(out, Case{Frame: f, MrgRxbuf: mrg, Topology: VMToVM, Queues: 1, Packed: true})
	}
	return out
}

// Split returns the case with split rings that c is the packed variant of.
func (c Case) Split() Case {
	c.Packed = false
	return c
}

// MQCases are the multi-queue variants measured on vhostd alone: the
// baseline (one queue pair, one poller) first, then more pollers and/or
// queue pairs, all with the backend confined to one core.
func MQCases(frame int, mrg bool, quick bool) []Case {
	base := Case{Frame: frame, MrgRxbuf: mrg, Topology: VMToVM, Queues: 1, Pollers: 1}
	vs := [][2]int{{1, 1}, {1, 2}, {2, 1}, {2, 2}}
	if quick {
		vs = [][2]int{{1, 1}, {2, 1}, {2, 2}}
	}
	var out []Case
	for _, v := range vs {
		c := base
		c.Queues, c.Pollers = v[0], v[1]
		out = append(out, c)
	}
	return out
}
