package config

import (
	"errors"
	"fmt"
	"strings"
)

// Uplink MTU limits; package uplink holds the same values (the daemon
// checks at compile time that they agree).
const (
	DefaultUplinkMTU = 1500
	MinUplinkMTU     = 68
	MaxUplinkMTU     = 9600
)

// DefaultUplinkName is the uplink's port name when --uplink gives none.
const DefaultUplinkName = "uplink"

// ParseUplink parses the --uplink flag: [NAME=]DEVARGS, where DEVARGS is a
// DPDK devargs string ("net_tap0,iface=vhostd0", "0000:01:00.0"). A
// leading "NAME=" is a port name only when no comma comes before the "="
// (a devargs option always follows a comma).
func ParseUplink(s string) (name, devargs string, err error) {
	name, devargs = DefaultUplinkName, s
	if i := strings.Index(s, "="); i >= 0 && !strings.Contains(s[:i], ",") {
		name, devargs = s[:i], s[i+1:]
	}
	switch {
	case name == "":
		return "", "", fmt.Errorf("--uplink %q: empty port name before '='; use [NAME=]DEVARGS", s)
	case devargs == "":
		return "", "", fmt.Errorf("--uplink %q: no DPDK device; use [NAME=]DEVARGS, e.g. net_tap0,iface=vhostd0", s)
	case strings.ContainsAny(s, " \t\n"):
		return "", "", fmt.Errorf("--uplink %q: devargs cannot contain whitespace", s)
	}
	return name, devargs, nil
}

// EALArgs returns the extra EAL arguments, split at spaces.
func (c *Config) EALArgs() []string { return strings.Fields(c.EAL) }

// validateUplink checks the uplink settings; names are the VM port names.
func (c *Config) validateUplink(names map[string]bool) []error {
	var errs []error
	if c.Uplink == "" {
		if c.EAL != "" {
			errs = append(errs, errors.New("eal arguments given without an uplink: --eal applies to the DPDK uplink, add --uplink DEVARGS"))
		}
		if c.UplinkMTU != 0 {
			errs = append(errs, errors.New("uplink_mtu given without an uplink: add --uplink DEVARGS"))
		}
		return errs
	}
	name, _, err := ParseUplink(c.Uplink)
	if err != nil {
		errs = append(errs, err)
	} else if names[name] {
		errs = append(errs, fmt.Errorf("uplink port name %q is used by a --socket port too: name the uplink with --uplink NAME=DEVARGS", name))
	}
	if c.UplinkMTU != 0 && (c.UplinkMTU < MinUplinkMTU || c.UplinkMTU > MaxUplinkMTU) {
		errs = append(errs, fmt.Errorf("uplink_mtu = %d: use %d to %d", c.UplinkMTU, MinUplinkMTU, MaxUplinkMTU))
	}
	for _, a := range c.EALArgs() {
		if a == "--vdev" || strings.HasPrefix(a, "--vdev=") {
			errs = append(errs, errors.New("eal: --vdev is not needed: vhostd probes the --uplink devargs itself"))
		}
	}
	return errs
}
