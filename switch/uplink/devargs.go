package uplink

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
)

// Devargs is a parsed DPDK devargs string: "DRIVER_OR_ADDRESS[,key=value...]".
type Devargs struct {
	Device string            // e.g. "net_tap0" or "0000:01:00.0"
	Args   map[string]string // the key=value options
}

// Driver returns the vdev driver name ("net_tap" for "net_tap0"), or ""
// for a device that is not a vdev (a PCI address).
func (d Devargs) Driver() string {
	if !strings.HasPrefix(d.Device, "net_") && !strings.HasPrefix(d.Device, "eth_") {
		return ""
	}
	return strings.TrimRight(d.Device, "0123456789")
}

// ParseDevargs splits a devargs string. It checks the shape only; DPDK
// decides whether a driver takes it.
func ParseDevargs(s string) (Devargs, error) {
	if s == "" {
		return Devargs{}, errors.New("empty devargs: give a DPDK device, e.g. net_tap0,iface=vhostd0")
	}
	if strings.ContainsAny(s, " \t\n") {
		return Devargs{}, fmt.Errorf("devargs %q contains whitespace", s)
	}
	parts := strings.Split(s, ",")
	d := Devargs{Device: parts[0], Args: map[string]string{}}
	if d.Device == "" || strings.Contains(d.Device, "=") {
		return Devargs{}, fmt.Errorf("devargs %q: the device name comes first, e.g. net_tap0,iface=vhostd0", s)
	}
	for _, kv := range parts[1:] {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return Devargs{}, fmt.Errorf("devargs %q: empty option", s)
		}
		d.Args[k] = v
	}
	return d, nil
}

// ifnamsiz is the kernel's interface name limit, with its NUL.
const ifnamsiz = 16

// CheckInterfaces checks what the devargs say about kernel interfaces
// before DPDK is started, so that the error names the interface rather
// than a DPDK errno: net_af_packet and net_pcap attach to an interface
// that must exist; net_tap and net_tun create one, whose name must be free
// (or name an existing tap, which they reuse).
func CheckInterfaces(d Devargs) error {
	iface, ok := d.Args["iface"]
	driver := d.Driver()
	attach := driver == "net_af_packet" || driver == "eth_af_packet" || driver == "net_pcap"
	create := driver == "net_tap" || driver == "net_tun"
	// Other drivers use iface= for something else (net_vhost: a socket).
	if !ok || !attach && !create {
		return nil
	}
	if iface == "" || len(iface) >= ifnamsiz {
		return fmt.Errorf("uplink %s: iface=%q: interface names are 1 to %d characters", d.Device, iface, ifnamsiz-1)
	}
	l, err := netlink.LinkByName(iface)
	var nf netlink.LinkNotFoundError
	switch {
	case attach && errors.As(err, &nf):
		return fmt.Errorf("uplink %s: no network interface %q (%s attaches to an existing interface; see ip link)", d.Device, iface, driver)
	case attach && err != nil:
		return fmt.Errorf("uplink %s: look up interface %q: %w", d.Device, iface, err)
	case create && err == nil && l.Type() != "tuntap":
		return fmt.Errorf("uplink %s: a %s interface named %q exists already: %s creates its own interface, choose another iface= name", d.Device, l.Type(), iface, driver)
	}
	return nil
}
