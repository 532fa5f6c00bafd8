package control

// UplinkInfo describes the DPDK uplink for `vhostctl ports`.
type UplinkInfo struct {
	Devargs   string `json:"devargs"`
	Device    string `json:"device"` // DPDK's device name
	Driver    string `json:"driver"`
	MAC       string `json:"mac"`
	MTU       int    `json:"mtu"`
	Interface string `json:"interface,omitempty"` // kernel interface behind the device
	LinkUp    bool   `json:"link_up"`
	// LinkUnknown: the device's kernel interface left vhostd's network
	// namespace, so vhostd cannot see its link.
	LinkUnknown bool   `json:"link_unknown,omitempty"`
	SpeedMbps   uint32 `json:"speed_mbps"`
	FullDuplex  bool   `json:"full_duplex"`
	LinkChanges uint64 `json:"link_changes"` // up/down transitions since start
	// RxMode is how an idle vhostd learns of frames from the device:
	// "interrupts" (its rx interrupt fd) or "polling" (every millisecond).
	RxMode string `json:"rx_mode"`
	// TxOffloads and RxOffloads are the offloads the device was
	// configured with, by DPDK's names (TCP_TSO, TCP_CKSUM, TCP_LRO...):
	// what it does for frames instead of vhostd's software.
	TxOffloads []string `json:"tx_offloads"`
	RxOffloads []string `json:"rx_offloads"`
	// TxSegMax and TxMTUSegMax are the device's limits on mbufs per TSO
	// frame and per segment of one (nb_seg_max, nb_mtu_seg_max).
	TxSegMax    int `json:"tx_seg_max"`
	TxMTUSegMax int `json:"tx_mtu_seg_max"`
	// Offloads counts frames that took them.
	Offloads UplinkOffloads `json:"offloads"`
}

// UplinkOffloads counts the offloads of frames through the uplink device
// (the port's gso_passed counts TSO frames handed to it; gso_segmented
// and csum_completed what was done in software instead).
type UplinkOffloads struct {
	TxCsum           uint64 `json:"tx_csum_offloaded"`  // partial checksums handed to the device
	TxTSOSegLimit    uint64 `json:"tx_tso_seg_limit"`   // TSO frames beyond the device's mbufs per frame, segmented in software
	RxLRO            uint64 `json:"rx_lro"`             // GSO frames received (RX_LRO), passed on as such
	RxCsumPartial    uint64 `json:"rx_csum_partial"`    // frames received with a partial checksum
	RxCsumGood       uint64 `json:"rx_csum_good"`       // frames the device verified (DATA_VALID to guests)
	RxCsumBad        uint64 `json:"rx_csum_bad"`        // frames the device found bad, passed on plain
	RxOffloadInvalid uint64 `json:"rx_offload_invalid"` // flagged frames whose headers did not parse, passed plain
}

// DPDKStats are a DPDK device's own counters (rte_eth_stats and xstats),
// next to the switch's view of the port.
type DPDKStats struct {
	RxPackets uint64            `json:"ipackets"`
	TxPackets uint64            `json:"opackets"`
	RxBytes   uint64            `json:"ibytes"`
	TxBytes   uint64            `json:"obytes"`
	RxMissed  uint64            `json:"imissed"`
	RxErrors  uint64            `json:"ierrors"`
	TxErrors  uint64            `json:"oerrors"`
	RxNoMbuf  uint64            `json:"rx_nombuf"`
	Xstats    map[string]uint64 `json:"xstats,omitempty"`
	Error     string            `json:"error,omitempty"` // why the counters could not be read
}
