// Package daemon wires vhostd together: the switch, one VM port and
// vhost-user server per configured socket, the DPDK uplink if configured,
// and the control socket.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/daemon/cpus"
	"github.com/vhostd/vhostd/daemon/metrics"
	"github.com/vhostd/vhostd/daemon/sdnotify"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/tsc"
	"github.com/vhostd/vhostd/vhost"
)

type vmPort struct {
	port   *vswitch.VMPort
	server *vhost.Server
	idx    int // in the switch
}

// Daemon is a running vhostd.
type Daemon struct {
	log     *logrus.Entry
	sw      *vswitch.Switch
	uplink  *uplinkPort // nil without --uplink
	control *control.Server
	metrics *metrics.Server // nil without --metrics

	// mu serializes changes (addPort, removePort, Stop) and guards what
	// they change.
	mu sync.Mutex
	// cfg is the running configuration: cfg.Ports are the VM ports in
	// the order they were added, one per ports entry.
	cfg      config.Config
	ports    []vmPort
	stopping bool // no more changes

	placement *placement // what Start changed about where threads run
}

// Start builds and starts everything cfg describes. On error, whatever was
// started is stopped again and every socket it created is removed.
func Start(cfg config.Config, log *logrus.Entry) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Before anything starts a thread of its own (DPDK's EAL pins its
	// main thread to the first CPU left to it).
	pl, err := place(cfg.PollerCPUs, cfg.Pollers, log)
	if err != nil {
		return nil, err
	}
	sw, err := vswitch.New(vswitch.Config{Pollers: cfg.Pollers, FDBSize: cfg.FDBSize, AgeTime: cfg.FDBAge.Duration, CPUs: pl.pollers}, log)
	if err != nil {
		pl.undo()
		return nil, fmt.Errorf("switch: %w", err)
	}
	// The ports are added one by one below, each as add-port would.
	d := &Daemon{log: log, sw: sw, cfg: cfg, placement: pl}
	d.cfg.Ports = nil
	started := false
	defer func() {
		if !started {
			d.Stop()
		}
	}()
	// The uplink first: DPDK is the likeliest part to fail, and then no
	// socket has been created yet.
	if cfg.Uplink != "" {
		if d.uplink, err = openUplink(cfg, log); err != nil {
			return nil, err
		}
		if _, err := sw.AddPort(d.uplink.switchPort()); err != nil {
			return nil, fmt.Errorf("uplink: %w", err)
		}
	}
	d.mu.Lock()
	for _, pc := range cfg.Ports {
		if err := d.addPort(pc); err != nil {
			d.mu.Unlock()
			return nil, err
		}
	}
	d.mu.Unlock()
	// Bound before the control socket, and so before vhostd reports
	// running: a scraper or health check started once the control
	// socket answers finds it. It reads the views the control socket
	// answers from.
	metricsAddr := ""
	if cfg.Metrics != "" {
		if d.metrics, err = metrics.Listen(cfg.Metrics, d, log); err != nil {
			return nil, err
		}
		metricsAddr = d.metrics.Addr().String()
	}
	if err := config.EnsureDir(cfg.Control); err != nil {
		return nil, err
	}
	if d.control, err = control.Listen(cfg.Control, d, log); err != nil {
		return nil, err
	}
	sw.Start()
	// Written once at start too: the file then says what runs, flags
	// included, from the first moment.
	if cfg.StateFile != "" {
		if err := config.WriteState(cfg.StateFile, d.Config()); err != nil {
			return nil, err
		}
	}
	started = true
	log.WithFields(logrus.Fields{"control": cfg.Control, "ports": len(cfg.Ports), "pollers": cfg.Pollers, "gomaxprocs": runtime.GOMAXPROCS(0), "uplink": cfg.Uplink, "state_file": cfg.StateFile, "metrics": metricsAddr}).Info("vhostd running")
	return d, nil
}

// addPort validates pc against the running configuration, by the config
// file's rules, and serves it: a switch port and its vhost-user socket.
// Start adds the configured ports with it, add-port the others. d.mu must
// be held. On error nothing of pc is left.
func (d *Daemon) addPort(pc config.Port) (err error) {
	next := d.cfg
	next.Ports = append(append([]config.Port(nil), d.cfg.Ports...), pc)
	// Validate's errors name the port already.
	if err := next.Validate(); err != nil {
		return err
	}
	mask, _ := vhost.ParseFeatureMask(pc.DisableFeatures) // checked by Validate
	plog := d.log.WithField("port", pc.Name)
	sec, err := portSecurity(next, pc)
	if err != nil {
		return fmt.Errorf("port %s: %w", pc.Name, err)
	}
	vp := vswitch.NewVMPort(pc.Name, pc.QueuePairs, d.log)
	idx, err := d.sw.AddSecuredPort(vp, sec)
	if err != nil {
		return fmt.Errorf("port %s: %w", pc.Name, err)
	}
	defer func() {
		if err != nil {
			d.sw.RemovePort(idx)
		}
	}()
	opts := vhost.Options{DisabledFeatures: mask, QueuePairs: pc.QueuePairs, MTU: next.MTU(pc)}
	if sec.Mode == vswitch.FixedMAC {
		opts.MAC = sec.MAC.Bytes()
	}
	srv, err := openSocket(next, pc, opts, vp, plog)
	if err != nil {
		return fmt.Errorf("port %s: %w", pc.Name, err)
	}
	// A guest whose memory faults on the data path loses its
	// connection; Drop does not wait, and is called off the poller.
	vp.OnFault = srv.Drop
	d.ports = append(d.ports, vmPort{port: vp, server: srv, idx: idx})
	d.cfg = next
	go func() {
		if err := srv.Serve(); err != nil {
			plog.WithError(err).Error("vhost-user socket stopped accepting")
		}
	}()
	plog.WithFields(logrus.Fields{"socket": pc.Socket, "client": pc.Client, "disabled": vhost.FeatureNames(mask), "mac": pc.MAC, "max_macs": sec.MaxMACs, "mtu": opts.MTU}).Info("serving vhost-user socket")
	return nil
}

// removePort deletes the VM port name: its frontend is dropped and torn
// down (its memory unmapped, its fds closed), its socket removed, and the
// switch forgets it and its addresses. d.mu must be held.
func (d *Daemon) removePort(name string) error {
	i := slices.IndexFunc(d.ports, func(p vmPort) bool { return p.port.Name() == name })
	if i < 0 {
		return fmt.Errorf("no VM port named %q (see vhostctl ports)", name)
	}
	p := d.ports[i]
	// Close returns once the frontend's teardown is over: the rings are
	// unpublished, so the switch can let go of the port.
	err := p.server.Close()
	d.sw.RemovePort(p.idx)
	d.ports = slices.Delete(d.ports, i, i+1)
	d.cfg.Ports = slices.Delete(slices.Clone(d.cfg.Ports), i, i+1)
	d.log.WithField("port", name).Info("port deleted")
	if err != nil {
		return fmt.Errorf("port %s deleted, but closing its socket: %w", name, err)
	}
	return nil
}

// AddPort implements control.Handler: add-port.
func (d *Daemon) AddPort(pc config.Port) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return errors.New("vhostd is stopping")
	}
	if err := d.addPort(pc); err != nil {
		return err
	}
	return d.saveState("added", pc.Name)
}

// DelPort implements control.Handler: del-port.
func (d *Daemon) DelPort(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return errors.New("vhostd is stopping")
	}
	if d.uplink != nil && name == d.uplink.switchPort().Name() {
		return fmt.Errorf("%q is the DPDK uplink; only VM ports can be deleted", name)
	}
	if err := d.removePort(name); err != nil {
		return err
	}
	return d.saveState("deleted", name)
}

// Trace implements control.Handler: trace.
func (d *Daemon) Trace(name string) ([]control.PortTrace, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []control.PortTrace
	var known []string
	for _, p := range d.ports {
		pn := p.port.Name()
		known = append(known, pn)
		if name == "" || name == pn {
			out = append(out, control.PortTrace{Port: pn, Sub: p.server.Trace()})
		}
	}
	if len(out) == 0 {
		switch {
		case d.uplink != nil && name == d.uplink.switchPort().Name():
			return nil, fmt.Errorf("%q is the DPDK uplink: it has no vhost-user connection to trace", name)
		case name == "":
			return nil, errors.New("no VM ports to trace")
		}
		return nil, fmt.Errorf("no VM port %q (ports: %s)", name, strings.Join(known, ", "))
	}
	return out, nil
}

// saveState writes the running configuration to the state file, if there
// is one. The change (port name, what happened) stays made if it fails:
// the error says so.
func (d *Daemon) saveState(what, name string) error {
	if d.cfg.StateFile == "" {
		return nil
	}
	if err := config.WriteState(d.cfg.StateFile, d.cfg); err != nil {
		d.log.WithError(err).WithField("port", name).Error("state file not written")
		return fmt.Errorf("port %s %s, but the state file was not written, so a restart from it would not have the change: %w", name, what, err)
	}
	return nil
}

// Config implements control.Handler: the running configuration, ports
// added and deleted at runtime included.
func (d *Daemon) Config() config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.cfg
	c.Ports = slices.Clone(d.cfg.Ports)
	return c
}

// openSocket makes the vhost-user side of port pc: a socket vhostd creates
// (server mode), or in client mode one the frontend serves, which Serve
// connects to and reconnects to until Close.
func openSocket(cfg config.Config, pc config.Port, opts vhost.Options, b vhost.Backend, log *logrus.Entry) (*vhost.Server, error) {
	if pc.Client {
		return vhost.Dial(pc.Socket, opts, b, log)
	}
	// Checked by Validate, but user and group names are looked up
	// again: the system's may have changed since.
	perm, err := cfg.SocketPerm(pc)
	if err != nil {
		return nil, err
	}
	if err := config.EnsureDir(pc.Socket); err != nil {
		return nil, err
	}
	opts.Perm = perm
	return vhost.Listen(pc.Socket, opts, b, log)
}

// portSecurity is the switch's policy for the VM port pc.
func portSecurity(cfg config.Config, pc config.Port) (vswitch.PortSecurity, error) {
	sec := vswitch.PortSecurity{MaxMACs: cfg.MaxMACs(pc)}
	switch pc.MAC {
	case "":
	case config.LearnMAC:
		sec.Mode = vswitch.LearnMAC
	default:
		m, err := vswitch.ParseMAC(pc.MAC)
		if err != nil {
			return sec, err
		}
		sec.Mode, sec.MAC = vswitch.FixedMAC, m
	}
	return sec, nil
}

// Run starts the daemon and runs it until ctx is done.
func Run(ctx context.Context, cfg config.Config, log *logrus.Entry) error {
	d, err := Start(cfg, log)
	if err != nil {
		return err
	}
	// Every socket listens and the control socket is up: tell systemd
	// (Type=notify), if it started us.
	if _, err := sdnotify.Ready(fmt.Sprintf("serving %d ports, control socket %s", len(cfg.Ports), cfg.Control)); err != nil {
		log.WithError(err).Warn("telling systemd vhostd is ready")
	}
	<-ctx.Done()
	log.Info("shutting down")
	if _, err := sdnotify.Stopping("shutting down"); err != nil {
		log.WithError(err).Warn("telling systemd vhostd is stopping")
	}
	d.Stop()
	return nil
}

// Stop forwards what the guests had queued in their transmit rings (up to
// DrainTimeout), then drops every frontend, removes the sockets, stops the
// switch, and closes the uplink and DPDK.
func (d *Daemon) Stop() {
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	// The metrics and control sockets without d.mu: a request in flight
	// may wait for it, and Close waits for requests.
	if d.metrics != nil {
		if err := d.metrics.Close(); err != nil {
			d.log.WithError(err).Warn("closing the metrics listener")
		}
		d.metrics = nil
	}
	if d.control != nil {
		d.control.Close()
		d.control = nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Forward what the guests had queued before the frontends go.
	vms := make([]*vswitch.VMPort, 0, len(d.ports))
	for _, p := range d.ports {
		vms = append(vms, p.port)
	}
	d.drain(vms, DrainTimeout)
	var errs []error
	for _, p := range d.ports {
		if err := p.server.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	d.ports = nil
	d.sw.Close()
	// The pollers have stopped: nothing touches the uplink any more.
	if d.uplink != nil {
		if err := d.uplink.close(); err != nil {
			errs = append(errs, err)
		}
		d.uplink = nil
	}
	if err := errors.Join(errs...); err != nil {
		d.log.WithError(err).Warn("closing sockets and the uplink")
	}
	d.placement.undo()
	d.placement = nil
}

// Ports implements control.Handler.
func (d *Daemon) Ports() []control.PortInfo {
	var out []control.PortInfo
	byName := map[string]*vhost.Server{}
	// Under d.mu, the switch's ports are the VM ports of d.ports (and the
	// uplink): a port being added or deleted shows whole or not at all.
	d.mu.Lock()
	for _, p := range d.ports {
		byName[p.port.Name()] = p.server
	}
	swPorts := d.sw.Ports()
	d.mu.Unlock()
	for _, pi := range swPorts {
		info := control.PortInfo{Name: pi.Port.Name(), Kind: "vhost-user", Pollers: pi.Pollers, State: "listening",
			MaxMACs: d.sw.FDBSize(), LearnedMACs: pi.LearnedMACs}
		if n := pi.Security.MaxMACs; n > 0 && n < info.MaxMACs {
			info.MaxMACs = n
		}
		switch pi.Security.Mode {
		case vswitch.FixedMAC:
			info.MAC = pi.Security.MAC.String()
		case vswitch.LearnMAC:
			info.MAC = config.LearnMAC
		}
		if pi.LockedMAC != 0 {
			info.LockedMAC = pi.LockedMAC.String()
		}
		if srv := byName[info.Name]; srv != nil {
			info.Vhost = srv.Status()
			switch {
			case info.Vhost.Connected:
				info.State = "connected"
			case info.Vhost.Mode == vhost.ModeClient:
				info.State = "connecting"
			}
		}
		if vp, ok := pi.Port.(*vswitch.VMPort); ok && vp.Running() {
			info.State = "running"
		}
		if d.uplink != nil && pi.Port == d.uplink.switchPort() {
			info.Kind, info.Uplink = "dpdk", d.uplink.info()
			switch {
			case info.Uplink.LinkUnknown:
				info.State = "unknown"
			case info.Uplink.LinkUp:
				info.State = "up"
			default:
				info.State = "down"
			}
		}
		out = append(out, info)
	}
	return out
}

// Stats implements control.Handler.
func (d *Daemon) Stats() []control.PortStats {
	var out []control.PortStats
	for _, pi := range d.sw.Ports() {
		ps := control.PortStats{Name: pi.Port.Name(), Snapshot: pi.Counters}
		if vp, ok := pi.Port.(*vswitch.VMPort); ok {
			ps.Queues = vp.QueueStats()
		}
		if d.uplink != nil && pi.Port == d.uplink.switchPort() {
			ps.DPDK = d.uplink.stats()
		}
		out = append(out, ps)
	}
	return out
}

// Pollers implements control.Handler.
func (d *Daemon) Pollers() []control.PollerStats {
	hz := tsc.Hz()
	var out []control.PollerStats
	for _, l := range d.sw.PollerLoads() {
		ps := control.PollerStats{Poller: l.Poller, Ports: l.Ports, BusyCycles: l.BusyCycles, IdleCycles: l.IdleCycles,
			Frames: l.Frames, Bursts: l.Bursts, TSCHz: hz, CPU: l.CPU, TID: l.TID}
		if l.TID != 0 {
			// 0 if the poller stopped and its thread went meanwhile.
			ps.Preempted, _ = cpus.Preemptions(l.TID)
		}
		if ps.Ports == nil {
			ps.Ports = []string{}
		}
		if hz > 0 {
			ps.BusySeconds, ps.IdleSeconds = float64(l.BusyCycles)/hz, float64(l.IdleCycles)/hz
		}
		out = append(out, ps)
	}
	return out
}

// FDBCounts reports the FDB's totals (for the metrics).
func (d *Daemon) FDBCounts() (vswitch.FDBCounts, int) { return d.sw.FDBCounts(), d.sw.FDBSize() }

// FDB implements control.Handler.
func (d *Daemon) FDB() []control.FDBEntry { return d.sw.FDB() }
