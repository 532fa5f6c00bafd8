// Package uplink is the switch port that reaches the outside network: a
// DPDK ethdev (a NIC bound to vfio-pci, or a virtual device such as
// net_tap, net_af_packet, net_vhost or net_memif) with one receive and one
// transmit queue, driven through the cgo binding in package dpdk.
//
// Frames received from the device are handed to the switch as views of
// mbuf memory (no copy) and freed in bulk when the poller is done with the
// burst; frames the switch transmits are copied once into mbufs.
//
// While idle, the poller that owns the port sleeps on the device's rx
// interrupt fd where the driver has one (net_tap: the tap queue itself;
// net_vhost: an epoll fd around the frontend's kick; NICs: an eventfd),
// marked never to be read (vswitch.NoDrainer). Devices without rx
// interrupts (net_ring, net_null, net_af_packet, net_memif) are set up
// again without them, and the port asks its poller (vswitch.IdlePoller)
// to look every millisecond. Status says which mode the port runs in.
//
// Jumbo frames: every mbuf has a data room of at least the largest frame
// (MTU + Ethernet header + one VLAN tag), so a frame is always one mbuf
// and no device needs scatter support. The mbuf pool is sized from that.
//
// Offloads (offload.go): TSO and partial checksums go to a device that
// reports them, the rest is completed in software; the device's LRO and
// checksum flags become the frames' offload.Meta on receive.
//
// Without cgo the package holds only its pure-Go devargs checks.
package uplink
