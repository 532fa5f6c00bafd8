package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/vhostd/vhostd/daemon/control"
)

// printUplinks prints a line per DPDK uplink under the ports table: its
// device, MAC, MTU and link.
func printUplinks(out io.Writer, ports []control.PortInfo) {
	for _, p := range ports {
		u := p.Uplink
		if u == nil {
			continue
		}
		link := "down"
		if u.LinkUnknown {
			link = "unknown (its interface is not in vhostd's network namespace)"
		} else if u.LinkUp {
			duplex := "half-duplex"
			if u.FullDuplex {
				duplex = "full-duplex"
			}
			link = fmt.Sprintf("up %d Mbps %s", u.SpeedMbps, duplex)
		}
		dev := u.Device + " (" + u.Driver
		if u.Interface != "" {
			dev += ", interface " + u.Interface
		}
		rx := ""
		if u.RxMode != "" {
			rx = ", rx " + u.RxMode
		}
		fmt.Fprintf(out, "%s: DPDK device %s), mac %s, mtu %d, link %s, %d link changes%s\n", p.Name, dev, u.MAC, u.MTU, link, u.LinkChanges, rx)
		printUplinkOffloads(out, p.Name, u)
	}
}

// printUplinkOffloads prints the offloads the uplink device took and the
// frames that used them.
func printUplinkOffloads(out io.Writer, name string, u *control.UplinkInfo) {
	list := func(s []string) string {
		if len(s) == 0 {
			return "none"
		}
		return strings.Join(s, ",")
	}
	o := u.Offloads
	fmt.Fprintf(out, "%s offloads: tx %s, rx %s; tx_csum_offloaded=%d tx_tso_seg_limit=%d rx_lro=%d rx_csum_partial=%d rx_csum_good=%d rx_csum_bad=%d rx_offload_invalid=%d\n",
		name, list(u.TxOffloads), list(u.RxOffloads), o.TxCsum, o.TxTSOSegLimit, o.RxLRO, o.RxCsumPartial, o.RxCsumGood, o.RxCsumBad, o.RxOffloadInvalid)
	if u.TxSegMax > 0 {
		fmt.Fprintf(out, "%s device limits: %d mbufs per frame (nb_seg_max), %d per segment (nb_mtu_seg_max)\n", name, u.TxSegMax, u.TxMTUSegMax)
	}
}

// printDeviceStats prints a DPDK uplink's own counters under the stats
// table: the ethdev counters, then its non-zero extended counters.
func printDeviceStats(out io.Writer, stats []control.PortStats) {
	for _, s := range stats {
		d := s.DPDK
		if d == nil {
			continue
		}
		if d.Error != "" {
			fmt.Fprintf(out, "%s device: counters unavailable: %s\n", s.Name, d.Error)
			continue
		}
		fmt.Fprintf(out, "%s device: rx %d pkts %d bytes, tx %d pkts %d bytes, rx missed %d, rx errors %d, tx errors %d, rx no-mbuf %d\n",
			s.Name, d.RxPackets, d.RxBytes, d.TxPackets, d.TxBytes, d.RxMissed, d.RxErrors, d.TxErrors, d.RxNoMbuf)
		var xs []string
		for k, v := range d.Xstats {
			if v != 0 {
				xs = append(xs, fmt.Sprintf("%s=%d", k, v))
			}
		}
		sort.Strings(xs)
		for len(xs) > 0 {
			n := min(len(xs), 4)
			fmt.Fprintf(out, "%s xstats: %s\n", s.Name, strings.Join(xs[:n], " "))
			xs = xs[n:]
		}
	}
}
