//go:build cgo

package daemon

import (
	"errors"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/switch/uplink"
)

// The MTU limits the config checks are the ones the uplink enforces:
// each array has a negative size, a compile error, if they differ.
var (
	_ [uplink.MaxMTU - config.MaxUplinkMTU]struct{}
	_ [config.MaxUplinkMTU - uplink.MaxMTU]struct{}
	_ [uplink.MinMTU - config.MinUplinkMTU]struct{}
	_ [config.MinUplinkMTU - uplink.MinMTU]struct{}
	_ [uplink.DefaultMTU - config.DefaultUplinkMTU]struct{}
	_ [config.DefaultUplinkMTU - uplink.DefaultMTU]struct{}
)

// uplinkPort is the DPDK uplink and the EAL it runs on. This file wires
// it in when vhostd is built with cgo; uplink_nodpdk.go stands in without.
type uplinkPort struct {
	eal  *dpdk.EAL
	port *uplink.Port
}

// openUplink checks the devargs, initialises DPDK's EAL, and opens and
// starts the uplink device. On error nothing is left behind: the device is
// closed (a tap interface deleted), EAL cleaned up, its runtime directory
// removed.
func openUplink(cfg config.Config, log *logrus.Entry) (*uplinkPort, error) {
	name, devargs, err := config.ParseUplink(cfg.Uplink)
	if err != nil {
		return nil, err
	}
	da, err := uplink.ParseDevargs(devargs)
	if err != nil {
		return nil, fmt.Errorf("--uplink: %w", err)
	}
	// Before DPDK starts: an error here names the interface, not an errno.
	if err := uplink.CheckInterfaces(da); err != nil {
		return nil, err
	}
	// A vhostd killed before it could clean up left its EAL runtime
	// directory; the next one removes it.
	const prefix = "vhostd-"
	if stale, err := dpdk.RemoveStaleRuntimeDirs(prefix); err != nil {
		log.WithError(err).Warn("removing runtime directories of dead vhostd processes")
	} else if len(stale) > 0 {
		log.WithField("dirs", stale).Info("removed runtime directories of dead vhostd processes")
	}
	var pci []string
	if dpdk.IsPCI(devargs) {
		pci = []string{devargs}
	}
	args := dpdk.EALArgs(cfg.EALArgs(), dpdk.ArgOptions{Prefix: fmt.Sprintf("%s%d", prefix, os.Getpid()), Core: -1, PCI: pci})
	eal, err := dpdk.Init(args, log)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", devargs, err)
	}
	port, err := uplink.Open(eal, uplink.Config{Name: name, Devargs: devargs, MTU: cfg.UplinkMTU, Pollers: cfg.Pollers}, log)
	if err != nil {
		if cerr := eal.Cleanup(); cerr != nil {
			log.WithError(cerr).Warn("DPDK cleanup after a failed uplink")
		}
		return nil, err
	}
	return &uplinkPort{eal: eal, port: port}, nil
}

// switchPort returns the port to add to the switch.
func (u *uplinkPort) switchPort() vswitch.Port { return u.port }

// close stops and closes the device and cleans up EAL. The switch must no
// longer poll the port.
func (u *uplinkPort) close() error {
	return errors.Join(u.port.Close(), u.eal.Cleanup())
}

// info describes the uplink for `vhostctl ports`.
func (u *uplinkPort) info() *control.UplinkInfo {
	s := u.port.Status()
	return &control.UplinkInfo{
		Devargs: s.Devargs, Device: s.Device, Driver: s.Driver, MAC: s.MAC, MTU: s.MTU, Interface: s.Interface,
		LinkUp: s.Link.Up, LinkUnknown: s.Link.Unknown, SpeedMbps: s.Link.SpeedMbps, FullDuplex: s.Link.FullDuplex, LinkChanges: s.LinkChanges,
		RxMode: s.RxMode.String(), TxOffloads: s.TxOffloads, RxOffloads: s.RxOffloads,
		TxSegMax: s.TxSegMax, TxMTUSegMax: s.TxMTUSegMax,
		Offloads: control.UplinkOffloads(s.Offloads),
	}
}

// stats reads the device's own counters for `vhostctl stats`.
func (u *uplinkPort) stats() *control.DPDKStats {
	st, xs, err := u.port.DeviceStats()
	out := &control.DPDKStats{
		RxPackets: st.RxPackets, TxPackets: st.TxPackets, RxBytes: st.RxBytes, TxBytes: st.TxBytes,
		RxMissed: st.RxMissed, RxErrors: st.RxErrors, TxErrors: st.TxErrors, RxNoMbuf: st.RxNoMbuf,
	}
	if err != nil {
		out.Error = err.Error()
	}
	if len(xs) > 0 {
		out.Xstats = make(map[string]uint64, len(xs))
		for _, x := range xs {
			out.Xstats[x.Name] = x.Value
		}
	}
	return out
}
