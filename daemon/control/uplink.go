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
