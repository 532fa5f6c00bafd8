// Package daemon wires vhostd together: the switch, one VM port and
// vhost-user server per configured socket, the DPDK uplink if configured,
// and the control socket.
package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
)

type vmPort struct {
	port   *vswitch.VMPort
	server *vhost.Server
}

// Daemon is a running vhostd.
type Daemon struct {
	log     *logrus.Entry
	sw      *vswitch.Switch
	ports   []vmPort
	uplink  *uplinkPort // nil without --uplink
	control *control.Server
}

// Start builds and starts everything cfg describes. On error, whatever was
// started is stopped again and every socket it created is removed.
func Start(cfg config.Config, log *logrus.Entry) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sw, err := vswitch.New(vswitch.Config{Pollers: cfg.Pollers, FDBSize: cfg.FDBSize, AgeTime: cfg.FDBAge.Duration}, log)
	if err != nil {
		return nil, fmt.Errorf("switch: %w", err)
	}
	d := &Daemon{log: log, sw: sw}
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
	for _, pc := range cfg.Ports {
		mask, _ := vhost.ParseFeatureMask(pc.DisableFeatures) // checked by Validate
		plog := log.WithField("port", pc.Name)
		sec, err := portSecurity(cfg, pc)
		if err != nil {
			return nil, fmt.Errorf("port %s: %w", pc.Name, err)
		}
		vp := vswitch.NewVMPort(pc.Name, pc.QueuePairs, log)
		if _, err := sw.AddSecuredPort(vp, sec); err != nil {
			return nil, fmt.Errorf("port %s: %w", pc.Name, err)
		}
		srv, err := openSocket(cfg, pc, vhost.Options{DisabledFeatures: mask, QueuePairs: pc.QueuePairs}, vp, plog)
		if err != nil {
			return nil, fmt.Errorf("port %s: %w", pc.Name, err)
		}
		// A guest whose memory faults on the data path loses its
		// connection; Drop does not wait, and is called off the poller.
		vp.OnFault = srv.Drop
		d.ports = append(d.ports, vmPort{port: vp, server: srv})
		go func() {
			if err := srv.Serve(); err != nil {
				plog.WithError(err).Error("vhost-user socket stopped accepting")
			}
		}()
		plog.WithFields(logrus.Fields{"socket": pc.Socket, "client": pc.Client, "disabled": vhost.FeatureNames(mask), "mac": pc.MAC, "max_macs": sec.MaxMACs}).Info("serving vhost-user socket")
	}
	if err := config.EnsureDir(cfg.Control); err != nil {
		return nil, err
	}
	if d.control, err = control.Listen(cfg.Control, d, log); err != nil {
		return nil, err
	}
	sw.Start()
	started = true
	log.WithFields(logrus.Fields{"control": cfg.Control, "ports": len(cfg.Ports), "pollers": cfg.Pollers, "uplink": cfg.Uplink}).Info("vhostd running")
	return d, nil
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
	<-ctx.Done()
	log.Info("shutting down")
	d.Stop()
	return nil
}

// Stop drops every frontend, removes the sockets, stops the switch, and
// closes the uplink and DPDK.
func (d *Daemon) Stop() {
	if d.control != nil {
		d.control.Close()
		d.control = nil
	}
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
}

// Ports implements control.Handler.
func (d *Daemon) Ports() []control.PortInfo {
	var out []control.PortInfo
	byName := map[string]*vhost.Server{}
	for _, p := range d.ports {
		byName[p.port.Name()] = p.server
	}
	for _, pi := range d.sw.Ports() {
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
		if d.uplink != nil && pi.Port == d.uplink.switchPort() {
			ps.DPDK = d.uplink.stats()
		}
		out = append(out, ps)
	}
	return out
}

// FDB implements control.Handler.
func (d *Daemon) FDB() []control.FDBEntry { return d.sw.FDB() }
