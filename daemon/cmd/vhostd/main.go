// Command vhostd is a vhost-user virtio-net backend: it serves one
// vhost-user socket per VM port and switches frames between them as a
// MAC-learning switch.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon"
	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/vhost"
)

type socketFlags []config.Port

func (s *socketFlags) String() string { return "" }
func (s *socketFlags) Set(v string) error {
	p, err := config.ParseSocket(v)
	if err != nil {
		return err
	}
	*s = append(*s, p)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vhostd:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("vhostd", flag.ContinueOnError)
	var sockets socketFlags
	fs.Var(&sockets, "socket", "serve a vhost-user socket: [NAME=]PATH[,client][,disable=FEAT+FEAT][,queues=N][,mac=MAC|learn][,max_macs=N][,mtu=N][,owner=USER][,group=GROUP][,mode=0660] (repeatable); features: "+strings.Join(vhost.Maskable(), ", ")+
		"; client: connect to a socket the frontend serves (QEMU server=on), reconnecting until it answers, instead of creating it"+
		"; mac= pins the port to the one source address its guest may send from (learn: the first it sends, per connection)"+
		"; mtu= is the port's MTU (68 to 65535), offered to the guest and enforced")
	cfgFile := fs.String("config", "", "TOML config file (flags given override it)")
	controlPath := fs.String("control", "", "control socket path (default "+config.DefaultControl+")")
	logLevel := fs.String("log-level", "", "log level: error, warn, info, debug (default info)")
	pollers := fs.Int("pollers", 0, "poller threads (default 1)")
	pollerCPUs := fs.String("poller-cpus", "", "pin the pollers to these CPUs, one per poller, as a list like 2,3 or 2-5 (poller i on the i-th), and keep every other thread of vhostd off them (default: the pollers run wherever the kernel puts them)")
	uplinkDev := fs.String("uplink", "", "DPDK uplink: [NAME=]DEVARGS, e.g. net_tap0,iface=vhostd0, net_af_packet0,iface=eth1 or a PCI address (see docs/uplink.md)")
	eal := fs.String("eal", "", "extra DPDK EAL arguments for the uplink, space separated (defaults work without hugepages: --no-huge -m 256 --no-shconf --no-pci -l CPU)")
	maxMACs := fs.Int("max-macs", 0, fmt.Sprintf("addresses each VM port may make the switch learn, unless its --socket says max_macs= (default %d, or fdb_size if smaller)", config.DefaultMaxMACs))
	mtu := fs.Int("mtu", 0, "MTU of every VM port, unless its --socket says mtu= (68 to 65535; default: none, frames of any size pass unless the frontend sets an MTU)")
	socketOwner := fs.String("socket-owner", "", "owner of every vhost-user socket, a user name or uid, unless its --socket says owner= (default: vhostd's user)")
	socketGroup := fs.String("socket-group", "", "group of every vhost-user socket, a group name or gid, unless its --socket says group= (default: vhostd's group)")
	socketMode := fs.String("socket-mode", "", "mode of every vhost-user socket, octal like 0660, unless its --socket says mode= (default: from the umask)")
	stateFile := fs.String("state-file", "", "keep the running configuration here, rewritten at every add-port and del-port; if the file exists at start, it is loaded in place of --config and the --socket flags (the other flags still apply)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on http://ADDR/metrics and a health check on /healthz, ADDR as HOST:PORT, e.g. 127.0.0.1:9480 (default: off)")
	uplinkMTU := fs.Int("uplink-mtu", 0, fmt.Sprintf("uplink MTU, %d to %d (default %d)", config.MinUplinkMTU, config.MaxUplinkMTU, config.DefaultUplinkMTU))
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vhostd --socket [NAME=]PATH[,OPTION...] ... [--uplink DEVARGS [--eal ARGS]] [--control PATH] [--config FILE] [--log-level LEVEL]\n"+
			"              [--pollers N [--poller-cpus LIST]] [--state-file FILE] [--metrics HOST:PORT] [--max-macs N] [--mtu N]\n"+
			"              [--socket-owner USER] [--socket-group GROUP] [--socket-mode MODE] [--uplink-mtu N]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; sockets are given with --socket", fs.Args())
	}
	cfg := config.Default()
	if *cfgFile != "" {
		var err error
		if cfg, err = config.Load(*cfgFile); err != nil {
			return err
		}
	}
	cfg.Ports = append(cfg.Ports, sockets...)
	if *stateFile != "" {
		cfg.StateFile = *stateFile
	}
	// A state file that exists is the configuration vhostd last ran
	// with, ports added and deleted at runtime included: it wins over
	// the config file and --socket, whose ports may since have been
	// deleted. The flags below still apply.
	var loadedState string
	if cfg.StateFile != "" {
		state, err := config.Load(cfg.StateFile)
		switch {
		case err == nil:
			state.StateFile, loadedState = cfg.StateFile, cfg.StateFile
			cfg = state
		case !errors.Is(err, iofs.ErrNotExist):
			return fmt.Errorf("%w (the state file is vhostd's running configuration, written at every change; fix it, or remove it to start from --config and --socket)", err)
		}
	}
	if *controlPath != "" {
		cfg.Control = *controlPath
	}
	if *logLevel != "" {
		cfg.LogLevel = *logLevel
	}
	if *pollers != 0 {
		cfg.Pollers = *pollers
	}
	if *pollerCPUs != "" {
		cfg.PollerCPUs = *pollerCPUs
	}
	if *uplinkDev != "" {
		cfg.Uplink = *uplinkDev
	}
	if *eal != "" {
		cfg.EAL = *eal
	}
	if *metricsAddr != "" {
		cfg.Metrics = *metricsAddr
	}
	if *uplinkMTU != 0 {
		cfg.UplinkMTU = *uplinkMTU
	}
	if *maxMACs != 0 {
		cfg.MaxMACsDefault = *maxMACs
	}
	if *mtu != 0 {
		cfg.MTUDefault = *mtu
	}
	if *socketOwner != "" {
		cfg.SocketOwner = *socketOwner
	}
	if *socketGroup != "" {
		cfg.SocketGroup = *socketGroup
	}
	if *socketMode != "" {
		cfg.SocketMode = config.Mode(*socketMode)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	logger := logrus.New()
	lvl, _ := logrus.ParseLevel(cfg.LogLevel)
	logger.SetLevel(lvl)
	if loadedState != "" {
		logger.WithFields(logrus.Fields{"state_file": loadedState, "ports": len(cfg.Ports)}).Info("loaded the state file in place of --config and --socket")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return daemon.Run(ctx, cfg, logrus.NewEntry(logger))
}
