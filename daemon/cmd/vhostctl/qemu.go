package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/qemu"
)

// qemuCommands are the commands that wire QEMU guests to vhostd's ports.
// Each parses its own flags; controlPath is the control socket given before the
// command (a --control after it wins).
var qemuCommands = map[string]func(args []string, controlPath string, out io.Writer) error{
	"attach":    runAttach,
	"detach":    runDetach,
	"qemu-args": runQEMUArgs,
}

// qemuUsage is the part of vhostctl's usage text about these commands.
const qemuUsage = `  attach --qmp PATH --port NAME [--mac MAC] [--id ID] [--bus BUS] [--reconnect SEC] [--timeout DUR]
          hot-plug a virtio-net NIC on port NAME into a running QEMU (its
          memory must be shared: see qemu-args)
  detach --qmp PATH --port NAME [--id ID] [--timeout DUR]
          unplug that NIC (the guest must release it) and check vhostd saw it go
  qemu-args --port NAME [--port NAME...] [--mac MAC] [--mem MB] [--reconnect SEC]
          print the QEMU options that attach a guest to the ports
`

// portTimeout bounds the wait for vhostd to see QEMU connect or disconnect.
const portTimeout = 10 * time.Second

// newSubFlags returns the flag set of a QEMU command, with --control.
func newSubFlags(name string, controlPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet("vhostctl "+name, flag.ContinueOnError)
	fs.StringVar(controlPath, "control", *controlPath, "vhostd control socket")
	return fs
}

func parseSub(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return nil
}

func runAttach(args []string, controlPath string, out io.Writer) error {
	fs := newSubFlags("attach", &controlPath)
	qmpPath := fs.String("qmp", "", "QEMU's QMP socket (QEMU option -qmp unix:PATH,server=on,wait=off)")
	port := fs.String("port", "", "vhostd port to attach")
	mac := fs.String("mac", "", "guest MAC address (default: derived from the port name)")
	id := fs.String("id", "", "QEMU device id (default: vhostd-PORT)")
	bus := fs.String("bus", "", "PCI bus for the device, e.g. a PCIe root port on q35 (default: QEMU's choice)")
	reconnect := fs.Int("reconnect", 1, "seconds between QEMU's attempts to reconnect after vhostd restarts; 0: never")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := parseSub(fs, args); err != nil {
		return err
	}
	if *qmpPath == "" || *port == "" {
		return errors.New("attach: --qmp and --port are required")
	}
	nicMAC, err := macFor(*port, *mac)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	p, err := lookupPort(ctx, controlPath, *port)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	// A second frontend would be refused by vhostd, and QEMU's netdev_add
	// would then block QEMU itself, retrying.
	if p.Vhost.Connected {
		return fmt.Errorf("attach: port %s already has a frontend (state %s); detach it first", *port, p.State)
	}
	sock := p.Vhost.Path
	if !filepath.IsAbs(sock) {
		return fmt.Errorf("attach: port %s's socket %q is a relative path, which QEMU would resolve in its own directory; start vhostd with an absolute --socket path", *port, sock)
	}
	// A port with an MTU offers it (VIRTIO_NET_F_MTU) only to a device
	// that asks for it: QEMU sends NET_SET_MTU and the driver takes the
	// MTU only with host_mtu set, as qemu-args does.
	nic := qemu.NIC{ID: *id, SocketPath: sock, MAC: nicMAC, Reconnect: *reconnect, Bus: *bus, HostMTU: p.Vhost.MTU}
	if nic.ID == "" {
		nic.ID = qemu.NICID(*port)
	}

	q, err := qemu.DialQMP(ctx, *qmpPath)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer q.Close()
	if err := qemu.AttachNIC(ctx, q, nic); err != nil {
		return err // "attach NIC ID: ..."
	}
	// QEMU sets the vhost-user connection up in netdev_add; the port runs
	// once the guest's driver starts the device.
	p, ok, err := waitPort(ctx, controlPath, *port, func(p control.PortInfo) bool { return p.Vhost.Connected })
	fmt.Fprintf(out, "attached port %s to QEMU as device %s, MAC %s\n", *port, nic.ID, nicMAC)
	switch {
	case err != nil:
		fmt.Fprintf(out, "warning: cannot ask vhostd about port %s: %v\n", *port, err)
	case !ok:
		fmt.Fprintf(out, "warning: vhostd shows no frontend on port %s yet (state %s); see vhostctl ports\n", *port, p.State)
	default:
		fmt.Fprintf(out, "vhostd: port %s %s\n", *port, p.State)
	}
	return nil
}

func runDetach(args []string, controlPath string, out io.Writer) error {
	fs := newSubFlags("detach", &controlPath)
	qmpPath := fs.String("qmp", "", "QEMU's QMP socket")
	port := fs.String("port", "", "vhostd port whose NIC to remove")
	id := fs.String("id", "", "QEMU device id given to attach (default: vhostd-PORT)")
	timeout := fs.Duration("timeout", qemu.DefaultUnplugTimeout, "how long the guest may take to release the NIC")
	if err := parseSub(fs, args); err != nil {
		return err
	}
	if *qmpPath == "" || *port == "" {
		return errors.New("detach: --qmp and --port are required")
	}
	if *id == "" {
		*id = qemu.NICID(*port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+2*portTimeout)
	defer cancel()
	if _, err := lookupPort(ctx, controlPath, *port); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	q, err := qemu.DialQMP(ctx, *qmpPath)
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	defer q.Close()
	if err := qemu.DetachNIC(ctx, q, *id, *timeout); err != nil {
		return err // "detach NIC ID: ..."
	}
	p, ok, err := waitPort(ctx, controlPath, *port, func(p control.PortInfo) bool { return !p.Vhost.Connected })
	if err != nil {
		return fmt.Errorf("detach: device %s removed from QEMU, but: %w", *id, err)
	}
	if !ok {
		return fmt.Errorf("detach: device %s removed from QEMU, but vhostd still shows port %s %s", *id, *port, p.State)
	}
	fmt.Fprintf(out, "detached device %s from QEMU\nvhostd: port %s %s\n", *id, *port, p.State)
	return nil
}

// macFor returns the MAC for port: given (checked) or derived from its name.
func macFor(port, given string) (string, error) {
	if given == "" {
		return qemu.PortMAC(port), nil
	}
	hw, err := net.ParseMAC(given)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("--mac %q: not a 6-byte MAC address", given)
	}
	if hw[0]&1 != 0 {
		return "", fmt.Errorf("--mac %s: a multicast address cannot be a NIC's", given)
	}
	return hw.String(), nil
}

// lookupPort returns vhostd's view of the named port, which must be a
// vhost-user socket (not, say, an uplink).
func lookupPort(ctx context.Context, controlPath, name string) (control.PortInfo, error) {
	var ports []control.PortInfo
	if err := control.Call(ctx, controlPath, "ports", &ports); err != nil {
		return control.PortInfo{}, err
	}
	var names []string
	for _, p := range ports {
		if p.Name == name {
			if p.Kind != "vhost-user" {
				return p, fmt.Errorf("port %s is of kind %s, not a vhost-user socket", name, p.Kind)
			}
			return p, nil
		}
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return control.PortInfo{}, fmt.Errorf("vhostd has no port %q (ports: %s)", name, strings.Join(names, ", "))
}

// waitPort polls vhostd until the named port satisfies cond, for at most
// portTimeout, and returns its last state and whether cond held.
func waitPort(ctx context.Context, controlPath, name string, cond func(control.PortInfo) bool) (control.PortInfo, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, portTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last control.PortInfo
	for {
		p, err := lookupPort(ctx, controlPath, name)
		switch {
		case err != nil && ctx.Err() != nil:
			return last, false, nil
		case err != nil:
			return last, false, err
		case cond(p):
			return p, true, nil
		}
		last = p
		select {
		case <-ctx.Done():
			return last, false, nil
		case <-tick.C:
		}
	}
}
