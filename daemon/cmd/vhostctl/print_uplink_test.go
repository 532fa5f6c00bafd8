package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
)

func TestPrintPortsShowsUplink(t *testing.T) {
	var b bytes.Buffer
	printPorts(&b, []control.PortInfo{
		{Name: "vm1", Kind: "vhost-user", State: "running", Pollers: []int{0, 1}},
		{Name: "wan", Kind: "dpdk", State: "up", Pollers: []int{1}, Uplink: &control.UplinkInfo{
			Devargs: "net_tap0,iface=vd0", Device: "net_tap0", Driver: "net_tap", Interface: "vd0",
			MAC: "02:00:00:00:00:01", MTU: 1500, LinkUp: true, SpeedMbps: 10000, FullDuplex: true, LinkChanges: 2,
		}},
		{Name: "moved", Kind: "dpdk", State: "unknown", Uplink: &control.UplinkInfo{Devargs: "net_tap1", LinkUnknown: true}},
	})
	out := b.String()
	for _, want := range []string{
		"vm1    vhost-user  running  0,1      ",
		"wan    dpdk        up       1        net_tap0,iface=vd0",
		"wan: DPDK device net_tap0 (net_tap, interface vd0), mac 02:00:00:00:00:01, mtu 1500, link up 10000 Mbps full-duplex, 2 link changes",
		"link unknown (its interface is not in vhostd's network namespace)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printPorts lacks %q:\n%s", want, out)
		}
	}
}

func TestPrintStatsShowsDeviceCounters(t *testing.T) {
	var b bytes.Buffer
	snap := vswitch.Snapshot{RxPackets: 7, TxPackets: 3, Drops: map[string]uint64{"tx_uplink_full": 2}}
	printStats(&b, []control.PortStats{
		{Name: "wan", Snapshot: snap, DPDK: &control.DPDKStats{RxPackets: 7, TxPackets: 3, RxBytes: 700, TxBytes: 300,
			Xstats: map[string]uint64{"rx_good_packets": 7, "tx_good_packets": 3, "rx_errors": 0}}},
		{Name: "broken", Snapshot: vswitch.Snapshot{Drops: map[string]uint64{}}, DPDK: &control.DPDKStats{Error: "dpdk: already closed"}},
	})
	out := b.String()
	for _, want := range []string{
		"wan drops: tx_uplink_full=2",
		"wan device: rx 7 pkts 700 bytes, tx 3 pkts 300 bytes, rx missed 0, rx errors 0, tx errors 0, rx no-mbuf 0",
		"wan xstats: rx_good_packets=7 tx_good_packets=3",
		"broken device: counters unavailable: dpdk: already closed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printStats lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "rx_errors") {
		t.Errorf("printStats shows a zero xstat:\n%s", out)
	}
}

// TestPrintUplinkOffloads: the uplink's offload line shows every offload
// counter, tx_tso_seg_limit included, and the device's mbuf limits.
func TestPrintUplinkOffloads(t *testing.T) {
	var b bytes.Buffer
	printUplinkOffloads(&b, "wan", &control.UplinkInfo{
		TxOffloads: []string{"TCP_TSO", "TCP_CKSUM"}, TxSegMax: 40, TxMTUSegMax: 8,
		Offloads: control.UplinkOffloads{TxCsum: 1, TxTSOSegLimit: 2, RxLRO: 3, RxCsumPartial: 4, RxCsumGood: 5, RxCsumBad: 6, RxOffloadInvalid: 7},
	})
	out := b.String()
	for _, want := range []string{
		"wan offloads: tx TCP_TSO,TCP_CKSUM, rx none; tx_csum_offloaded=1 tx_tso_seg_limit=2 rx_lro=3 rx_csum_partial=4 rx_csum_good=5 rx_csum_bad=6 rx_offload_invalid=7",
		"wan device limits: 40 mbufs per frame (nb_seg_max), 8 per segment (nb_mtu_seg_max)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printUplinkOffloads lacks %q:\n%s", want, out)
		}
	}
}
