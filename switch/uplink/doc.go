// Package uplink is the switch port that reaches the outside network: a
// DPDK ethdev (a NIC bound to vfio-pci, or a virtual device such as
// net_tap, net_af_packet, net_vhost or net_memif) with one receive and one
// transmit queue, driven through the cgo binding in package dpdk.
//
// Frames received from the device are handed to the switch as views of
// mbuf memory (no copy) and freed in bulk when the poller is done with the
// burst; frames the switch transmits are copied once into mbufs. The
// device has no receive interrupts the Go side could wait on, so the port
// asks its poller (vswitch.IdlePoller) to look every millisecond while
// idle.
//
// Jumbo frames: every mbuf has a data room of at least the largest frame
// (MTU + Ethernet header + one VLAN tag), so a frame is always one mbuf
// and no device needs scatter support. The mbuf pool is sized from that.
//
// Without cgo the package holds only its pure-Go devargs checks.
package uplink
