package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/vhostd/vhostd/vhost"
)

// LearnMAC is the port MAC setting that locks a port to the first unicast
// source address its guest sends, for as long as its frontend stays
// connected.
const LearnMAC = "learn"

// DefaultMaxMACs is how many addresses a VM port may make the switch
// learn when neither max_macs nor the port's own limit says otherwise (or
// fdb_size, if that is smaller).
const DefaultMaxMACs = 1024

// Mode is a file mode written as an octal string, "0660", in the config
// file: a TOML integer would be read as decimal (or, written 0o660, lose
// what the user wrote), so only strings are taken.
type Mode string

// UnmarshalTOML implements toml.Unmarshaler.
func (m *Mode) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("mode %v: write it as a quoted octal string, like \"0660\"", v)
	}
	*m = Mode(s)
	return nil
}

// ParseMode parses an octal permission string like "0660" (or "660",
// "0o660"): socket permissions, so nothing beyond 0777.
func ParseMode(s string) (os.FileMode, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not an octal mode like \"0660\"", s)
	case v > 0o777:
		return 0, fmt.Errorf("%q has bits beyond 0777 (setuid, setgid and sticky mean nothing on a socket); use e.g. \"0660\"", s)
	case v == 0:
		return 0, fmt.Errorf("%q would let no one but root connect; use e.g. \"0660\"", s)
	}
	return os.FileMode(v), nil
}

// lookupID resolves a user or group (what, listed in db) given by name or
// number.
func lookupID(what, db, s string, byName func(string) (string, error)) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > 1<<32-2 {
			return 0, fmt.Errorf("%q: numeric ids are 0 to %d", s, uint32(1<<32-2))
		}
		return n, nil
	}
	id, err := byName(s)
	if err != nil {
		return 0, fmt.Errorf("%q: no such %s on this system; give a name from %s or a numeric id", s, what, db)
	}
	return strconv.Atoi(id)
}

func lookupUser(s string) (int, error) {
	return lookupID("user", "/etc/passwd", s, func(s string) (string, error) {
		u, err := user.Lookup(s)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	})
}

func lookupGroup(s string) (int, error) {
	return lookupID("group", "/etc/group", s, func(s string) (string, error) {
		g, err := user.LookupGroup(s)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	})
}

// SocketPerm returns the owner, group and mode of port p's socket: the
// port's own settings, else the defaults for all sockets.
func (c *Config) SocketPerm(p Port) (vhost.SocketPerm, error) {
	perm, errs := socketPerm(portPermKeys, firstSet(p.Owner, c.SocketOwner), firstSet(p.Group, c.SocketGroup), Mode(firstSet(string(p.Mode), string(c.SocketMode))))
	return perm, errors.Join(errs...)
}

// The names of the owner, group and mode settings, for errors.
var (
	portPermKeys    = [3]string{"owner", "group", "mode"}
	defaultPermKeys = [3]string{"socket_owner (--socket-owner)", "socket_group (--socket-group)", "socket_mode (--socket-mode)"}
)

// socketPerm resolves an owner, group and mode; empty ones are left as
// the process creates the socket. Each error names its setting by keys.
func socketPerm(keys [3]string, owner, group string, mode Mode) (vhost.SocketPerm, []error) {
	var perm vhost.SocketPerm
	var errs []error
	if owner != "" {
		uid, err := lookupUser(owner)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %w", keys[0], err))
		}
		perm.UID, perm.SetUID = uid, err == nil
	}
	if group != "" {
		gid, err := lookupGroup(group)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %w", keys[1], err))
		}
		perm.GID, perm.SetGID = gid, err == nil
	}
	if mode != "" {
		m, err := ParseMode(string(mode))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %w", keys[2], err))
		}
		perm.Mode = m
	}
	return perm, errs
}

// firstSet returns the first of a and b that is not empty.
func firstSet(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// MTU returns port p's MTU: its own, else the default for all ports; 0
// for none.
func (c *Config) MTU(p Port) int {
	if p.MTU != 0 {
		return p.MTU
	}
	return c.MTUDefault
}

// MaxMACs returns how many addresses port p may make the switch learn.
func (c *Config) MaxMACs(p Port) int {
	switch {
	case p.MaxMACs > 0:
		return p.MaxMACs
	case c.MaxMACsDefault > 0:
		return c.MaxMACsDefault
	}
	return min(DefaultMaxMACs, c.FDBSize)
}

// checkMAC checks a port's mac setting: empty, "learn", or a unicast
// address that is not zero.
func checkMAC(s string) error {
	if s == "" || s == LearnMAC {
		return nil
	}
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil || len(hw) != 6:
		return fmt.Errorf("mac = %q: use an address like 02:00:00:00:00:0a, or \"learn\"", s)
	case hw[0]&1 != 0:
		return fmt.Errorf("mac = %q is a multicast address; a guest's own address is unicast", s)
	case string(hw) == "\x00\x00\x00\x00\x00\x00":
		return fmt.Errorf("mac = %q: the zero address is no guest's", s)
	}
	return nil
}

// validatePortSecurity checks the ports' mac, max_macs and socket
// permission settings.
func (c *Config) validatePortSecurity() []error {
	var errs []error
	if c.MaxMACsDefault < 0 || c.MaxMACsDefault > c.FDBSize {
		errs = append(errs, fmt.Errorf("max_macs (--max-macs) = %d: use 1 to fdb_size (%d), or 0 for the default (%d)", c.MaxMACsDefault, c.FDBSize, min(DefaultMaxMACs, c.FDBSize)))
	}
	_, permErrs := socketPerm(defaultPermKeys, c.SocketOwner, c.SocketGroup, c.SocketMode)
	errs = append(errs, permErrs...)
	macs := map[string]string{}
	for _, p := range c.Ports {
		if err := checkMAC(p.MAC); err != nil {
			errs = append(errs, fmt.Errorf("port %q: %w", p.Name, err))
		} else if p.MAC != "" && p.MAC != LearnMAC {
			hw, _ := net.ParseMAC(p.MAC)
			if other, ok := macs[hw.String()]; ok {
				errs = append(errs, fmt.Errorf("port %q: mac %s is port %q's already; give each port its own", p.Name, hw, other))
			}
			macs[hw.String()] = p.Name
		}
		if p.MaxMACs < 0 || p.MaxMACs > c.FDBSize {
			errs = append(errs, fmt.Errorf("port %q: max_macs = %d: use 1 to fdb_size (%d), or 0 for the default", p.Name, p.MaxMACs, c.FDBSize))
		}
		// The port's own settings only: the defaults were checked above.
		_, permErrs := socketPerm(portPermKeys, p.Owner, p.Group, p.Mode)
		for _, err := range permErrs {
			errs = append(errs, fmt.Errorf("port %q: %w", p.Name, err))
		}
	}
	return errs
}
