// Package config holds vhostd's settings: what a config file (TOML) and the
// command line can say, their defaults, and their validation.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/cpus"
	"github.com/vhostd/vhostd/vhost"
)

// DefaultControl is the control socket path when none is configured.
const DefaultControl = "/run/vhostd/control.sock"

// Port is one vhost-user socket served as a switch port.
type Port struct {
	Name            string   `toml:"name" json:"name"`
	Socket          string   `toml:"socket" json:"socket"`
	DisableFeatures []string `toml:"disable_features,omitempty" json:"disable_features,omitempty"`
	QueuePairs      int      `toml:"queue_pairs,omitzero" json:"queue_pairs,omitempty"`
	// MAC is the only source address the port's guest may send from:
	// an address, LearnMAC ("learn": the first unicast address it sends,
	// until its frontend disconnects), or empty for any. The address is
	// pinned to the port in the FDB.
	MAC string `toml:"mac,omitempty" json:"mac,omitempty"`
	// MaxMACs is how many addresses the port may make the switch learn;
	// 0 means Config.MaxMACsDefault.
	MaxMACs int `toml:"max_macs,omitzero" json:"max_macs,omitempty"`
	// MTU is the port's MTU (68 to 65535): the most NET_SET_MTU may set,
	// and what the switch enforces; 0 means Config.MTUDefault.
	MTU int `toml:"mtu,omitzero" json:"mtu,omitempty"`
	// Owner, Group and Mode are the socket file's; empty means
	// Config.SocketOwner, SocketGroup and SocketMode. Not with Client.
	Owner string `toml:"owner,omitempty" json:"owner,omitempty"`
	Group string `toml:"group,omitempty" json:"group,omitempty"`
	Mode  Mode   `toml:"mode,omitempty" json:"mode,omitempty"`
	// Client makes vhostd connect to Socket, which the frontend serves
	// (QEMU server=on, libvirt mode='server', DPDK virtio_user server=1),
	// and reconnect whenever the connection ends; by default vhostd
	// creates the socket and the frontend connects.
	Client bool `toml:"client,omitempty" json:"client,omitempty"`
}

// Config is everything vhostd can be told.
type Config struct {
	Control  string   `toml:"control" json:"control"`
	LogLevel string   `toml:"log_level" json:"log_level"`
	Pollers  int      `toml:"pollers" json:"pollers"`
	FDBSize  int      `toml:"fdb_size" json:"fdb_size"`
	FDBAge   Duration `toml:"fdb_age" json:"fdb_age"`
	Ports    []Port   `toml:"port" json:"port"`
	// PollerCPUs, if set, is a CPU list ("2,3", "2-5") with one CPU per
	// poller: poller i runs on the i-th CPU named, and no other thread
	// of vhostd runs on any of them.
	PollerCPUs string `toml:"poller_cpus,omitempty" json:"poller_cpus,omitempty"`
	// StateFile is where vhostd keeps its running configuration, ports
	// added and deleted at runtime included (see WriteState); empty for
	// none. A state file that exists when vhostd starts is loaded in
	// place of the config file and the --socket flags.
	StateFile string `toml:"state_file,omitempty" json:"state_file,omitempty"`
	// Uplink is the DPDK uplink as [NAME=]DEVARGS (see ParseUplink);
	// empty for none.
	Uplink string `toml:"uplink,omitempty" json:"uplink,omitempty"`
	// EAL holds extra DPDK EAL arguments, separated by spaces.
	EAL string `toml:"eal,omitempty" json:"eal,omitempty"`
	// UplinkMTU is the uplink's MTU; 0 means DefaultUplinkMTU.
	UplinkMTU int `toml:"uplink_mtu,omitzero" json:"uplink_mtu,omitempty"`
	// MaxMACsDefault is how many addresses each VM port may make the
	// switch learn, unless the port says otherwise; 0 means
	// DefaultMaxMACs, or fdb_size if smaller. The uplink may fill the
	// table.
	MaxMACsDefault int `toml:"max_macs,omitzero" json:"max_macs,omitempty"`
	// MTUDefault is the MTU of every VM port that does not set its own;
	// 0 means none (the frontend's NET_SET_MTU, if any, is enforced).
	MTUDefault int `toml:"mtu,omitzero" json:"mtu,omitempty"`
	// SocketOwner, SocketGroup (names or numeric ids) and SocketMode
	// (octal, "0660") are given to every vhost-user socket whose port
	// does not say otherwise; empty leaves what the process creates.
	SocketOwner string `toml:"socket_owner,omitempty" json:"socket_owner,omitempty"`
	SocketGroup string `toml:"socket_group,omitempty" json:"socket_group,omitempty"`
	SocketMode  Mode   `toml:"socket_mode,omitempty" json:"socket_mode,omitempty"`
	// Metrics is the HOST:PORT vhostd serves Prometheus metrics
	// (/metrics) and its health check (/healthz) on; empty for none.
	Metrics string `toml:"metrics,omitempty" json:"metrics,omitempty"`
}

// Duration is a time.Duration written as "300s" in the config file.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like \"300s\" or \"5m\"", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler: "5m0s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Default returns the settings used when nothing is said.
func Default() Config {
	return Config{Control: DefaultControl, LogLevel: "info", Pollers: 1, FDBSize: 8192, FDBAge: Duration{300 * time.Second}}
}

// Load reads a TOML file over the defaults. Unknown keys are errors, so a
// typo does not silently leave a setting at its default.
func Load(path string) (Config, error) {
	c := Default()
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("config %s: unknown keys %s (known: control, log_level, pollers, poller_cpus, fdb_size, fdb_age, state_file, max_macs, mtu, socket_owner, socket_group, socket_mode, metrics, uplink, eal, uplink_mtu, [[port]] name, socket, client, disable_features, queue_pairs, mac, max_macs, mtu, owner, group, mode)", path, strings.Join(keys, ", "))
	}
	return c, nil
}

// ParseSocket parses the --socket flag:
// [NAME=]PATH[,client][,disable=FEAT[+FEAT...]][,queues=N][,mac=MAC|learn][,max_macs=N][,mtu=N][,owner=USER][,group=GROUP][,mode=MODE].
// Values are checked by Validate.
// Without NAME, the port is named after the file, less its extension.
func ParseSocket(s string) (Port, error) {
	var p Port
	parts := strings.Split(s, ",")
	spec := parts[0]
	if i := strings.Index(spec, "="); i >= 0 && !strings.Contains(spec[:i], "/") {
		p.Name, p.Socket = spec[:i], spec[i+1:]
	} else {
		p.Socket = spec
	}
	if p.Socket == "" {
		return p, fmt.Errorf("--socket %q: no path; use [NAME=]PATH", s)
	}
	if p.Name == "" {
		base := filepath.Base(p.Socket)
		p.Name = strings.TrimSuffix(base, filepath.Ext(base))
	}
	for _, opt := range parts[1:] {
		k, v, ok := strings.Cut(opt, "=")
		switch {
		case !ok && k == "client":
			p.Client = true
		case ok && k == "disable":
			p.DisableFeatures = append(p.DisableFeatures, strings.Split(v, "+")...)
		case ok && k == "queues":
			n, err := strconv.Atoi(v)
			if err != nil {
				return p, fmt.Errorf("--socket %q: queues=%q is not a number", s, v)
			}
			p.QueuePairs = n
		case ok && k == "mac":
			p.MAC = v
		case ok && k == "max_macs":
			n, err := strconv.Atoi(v)
			if err != nil {
				return p, fmt.Errorf("--socket %q: max_macs=%q is not a number", s, v)
			}
			p.MaxMACs = n
		case ok && k == "mtu":
			n, err := strconv.Atoi(v)
			if err != nil {
				return p, fmt.Errorf("--socket %q: mtu=%q is not a number (use %d to %d)", s, v, vhost.MinMTU, vhost.MaxMTU)
			}
			p.MTU = n
		case ok && k == "owner":
			p.Owner = v
		case ok && k == "group":
			p.Group = v
		case ok && k == "mode":
			p.Mode = Mode(v)
		default:
			return p, fmt.Errorf("--socket %q: unknown option %q (known: client, disable=FEAT+FEAT, queues=N, mac=MAC|learn, max_macs=N, mtu=N, owner=USER, group=GROUP, mode=0660)", s, opt)
		}
	}
	return p, nil
}

// count is "1 CPU", "2 CPUs".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// Validate checks the settings and says what to fix.
func (c *Config) Validate() error {
	var errs []error
	if _, err := logrus.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("log level %q: use one of panic, fatal, error, warn, info, debug, trace", c.LogLevel))
	}
	if c.Pollers < 1 || c.Pollers > 64 {
		errs = append(errs, fmt.Errorf("pollers = %d: use 1 to 64", c.Pollers))
	}
	if c.PollerCPUs != "" {
		if list, err := cpus.Parse(c.PollerCPUs); err != nil {
			errs = append(errs, fmt.Errorf("poller_cpus = %q: %w", c.PollerCPUs, err))
		} else if len(list) != c.Pollers {
			errs = append(errs, fmt.Errorf("poller_cpus = %q names %s for %s: name one CPU per poller, or set pollers = %d", c.PollerCPUs, count(len(list), "CPU"), count(c.Pollers, "poller"), len(list)))
		}
	}
	if c.FDBSize < 4 || c.FDBSize > 1<<24 {
		errs = append(errs, fmt.Errorf("fdb_size = %d: use 4 to %d", c.FDBSize, 1<<24))
	}
	if c.FDBAge.Duration < time.Second {
		errs = append(errs, fmt.Errorf("fdb_age = %v: use at least 1s", c.FDBAge.Duration))
	}
	if c.Control == "" {
		errs = append(errs, errors.New("control socket path is empty"))
	}
	// With a state file, ports may all be added at runtime (vhostctl
	// add-port) and all deleted again.
	if len(c.Ports) == 0 && c.StateFile == "" {
		errs = append(errs, errors.New("no ports: give --socket [NAME=]PATH (repeatable) or [[port]] entries in the config file (or --state-file PATH, to start without ports and add them with vhostctl add-port)"))
	}
	if c.StateFile != "" && c.StateFile == c.Control {
		errs = append(errs, fmt.Errorf("state_file %q is the control socket's path; give the state file its own", c.StateFile))
	}
	names, paths := map[string]bool{}, map[string]bool{c.Control: true}
	for _, p := range c.Ports {
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("port with socket %q has no name", p.Socket))
		case names[p.Name]:
			errs = append(errs, fmt.Errorf("port name %q used twice", p.Name))
		}
		names[p.Name] = true
		if p.Socket == "" {
			errs = append(errs, fmt.Errorf("port %q has no socket path", p.Name))
		} else if paths[p.Socket] {
			errs = append(errs, fmt.Errorf("port %q: socket path %q used twice", p.Name, p.Socket))
		}
		paths[p.Socket] = true
		if _, err := vhost.ParseFeatureMask(p.DisableFeatures); err != nil {
			errs = append(errs, fmt.Errorf("port %q: %w", p.Name, err))
		}
		if p.Client && (p.Owner != "" || p.Group != "" || p.Mode != "") {
			errs = append(errs, fmt.Errorf("port %q: owner, group and mode set the permissions of a socket vhostd creates; a client port connects to the frontend's socket (the frontend sets its permissions): remove them, or drop client", p.Name))
		}
		if p.QueuePairs < 0 || p.QueuePairs > vhost.MaxQueuePairs {
			errs = append(errs, fmt.Errorf("port %q: queue_pairs = %d: use 1 to %d", p.Name, p.QueuePairs, vhost.MaxQueuePairs))
		}
		if p.MTU != 0 {
			if err := vhost.CheckMTU(p.MTU); err != nil {
				errs = append(errs, fmt.Errorf("port %q: %w", p.Name, err))
			}
		}
	}
	if c.MTUDefault != 0 {
		if err := vhost.CheckMTU(c.MTUDefault); err != nil {
			errs = append(errs, fmt.Errorf("default %w (the global mtu setting, --mtu)", err))
		}
	}
	if c.Metrics != "" {
		if err := CheckMetricsAddr(c.Metrics); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.validatePortSecurity()...)
	errs = append(errs, c.validateUplink(names)...)
	return errors.Join(errs...)
}

// CheckMetricsAddr checks a metrics address: HOST:PORT, with a numeric
// port (0 for any free one) and a host that is empty (every address), an
// IP address or a host name.
func CheckMetricsAddr(addr string) error {
	const use = "use HOST:PORT, e.g. 127.0.0.1:9480"
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: %w; %s", addr, err, use)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("metrics address %q: port %q is not a number from 0 to 65535; %s", addr, port, use)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("metrics address %q: %q is neither an IP address nor a host name; %s", addr, host, use)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// EnsureDir creates the directory that will hold path, if missing.
func EnsureDir(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create socket directory %s: %w", dir, err)
	}
	return nil
}
