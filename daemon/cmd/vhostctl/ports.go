package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
)

// portCommands are the commands that change vhostd's ports or show its
// configuration. Each parses its own flags; controlPath and asJSON are
// what was given before the command (a --control or --json after it
// wins).
var portCommands = map[string]func(args []string, controlPath string, asJSON bool, out io.Writer) error{
	"add-port":    runAddPort,
	"del-port":    runDelPort,
	"dump-config": runDumpConfig,
}

// portUsage is the part of vhostctl's usage text about these commands.
const portUsage = `  add-port NAME --socket PATH [--disable FEAT+FEAT] [--queues N] [--mac MAC|learn]
          [--max-macs N] [--mtu N] [--owner USER] [--group GROUP] [--mode 0660] [--client]
          serve one more vhost-user socket as a switch port (the settings of
          a [[port]] in the config file, checked by the same rules)
  del-port NAME
          delete a VM port: its frontend is disconnected, its socket removed
  dump-config
          print the running configuration as a config file for vhostd --config
`

// changeTimeout bounds a request that changes a port: deleting one waits
// for its frontend's teardown.
const changeTimeout = 15 * time.Second

// newPortFlags returns the flag set of a port command, with --control and
// --json.
func newPortFlags(name string, controlPath *string, asJSON *bool) *flag.FlagSet {
	fs := flag.NewFlagSet("vhostctl "+name, flag.ContinueOnError)
	fs.StringVar(controlPath, "control", *controlPath, "vhostd control socket")
	fs.BoolVar(asJSON, "json", *asJSON, "print JSON for scripts")
	return fs
}

// parseNamed parses "NAME [FLAGS]" or "[FLAGS] NAME" and returns NAME.
func parseNamed(fs *flag.FlagSet, args []string) (string, error) {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	switch {
	case name == "":
		return "", fmt.Errorf("%s: give the port's name: %s NAME", fs.Name(), fs.Name())
	case len(rest) > 0:
		return "", fmt.Errorf("%s: unexpected arguments %q (one port name, then flags)", fs.Name(), rest)
	}
	return name, nil
}

// portRequest is the add-port request that vhostctl's flags say: a
// config.Port as JSON, plus "client" when --client is given. The daemon
// decodes it into its own config.Port, so settings that vhostctl's
// config.Port lacks still reach it, and a daemon without them refuses
// them by name.
func portRequest(p config.Port, client bool) (json.RawMessage, error) {
	b, err := json.Marshal(p)
	if err != nil || !client {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m["client"] = true
	return json.Marshal(m)
}

func runAddPort(args []string, controlPath string, asJSON bool, out io.Writer) error {
	fs := newPortFlags("add-port", &controlPath, &asJSON)
	var p config.Port
	fs.StringVar(&p.Socket, "socket", "", "vhost-user socket path (required)")
	disable := fs.String("disable", "", "virtio features not to offer, joined by +: e.g. mrg_rxbuf+event_idx")
	fs.IntVar(&p.QueuePairs, "queues", 0, "queue pairs GET_QUEUE_NUM reports, 1 to 128 (default 8)")
	fs.StringVar(&p.MAC, "mac", "", "the one source address the guest may send from, or learn (default: any)")
	fs.IntVar(&p.MaxMACs, "max-macs", 0, "addresses the port may make the switch learn (default: vhostd's max_macs)")
	fs.IntVar(&p.MTU, "mtu", 0, "the port's MTU, 68 to 65535 (default: vhostd's mtu, if any)")
	fs.StringVar(&p.Owner, "owner", "", "socket owner, a user name or uid (default: vhostd's socket_owner)")
	fs.StringVar(&p.Group, "group", "", "socket group, a group name or gid (default: vhostd's socket_group)")
	mode := fs.String("mode", "", "socket mode, octal like 0660 (default: vhostd's socket_mode)")
	client := fs.Bool("client", false, "connect to the socket as a client (the frontend, e.g. QEMU with server=on, listens)")
	name, err := parseNamed(fs, args)
	if err != nil {
		return err
	}
	if p.Socket == "" {
		return errors.New("add-port: --socket PATH is required")
	}
	p.Name, p.Mode = name, config.Mode(*mode)
	if *disable != "" {
		p.DisableFeatures = strings.Split(*disable, "+")
	}
	raw, err := portRequest(p, *client)
	if err != nil {
		return fmt.Errorf("add-port: %w", err)
	}
	// The request's port is sent as vhostctl built it (see portRequest).
	req := struct {
		Command string          `json:"command"`
		Port    json.RawMessage `json:"port"`
	}{control.CmdAddPort, raw}
	ctx, cancel := context.WithTimeout(context.Background(), changeTimeout)
	defer cancel()
	var res control.PortChange
	if err := control.DoRaw(ctx, controlPath, control.Request{Command: control.CmdAddPort, Port: &p}, req, &res); err != nil {
		return fmt.Errorf("add-port %s: %w", name, err)
	}
	return printChange(out, asJSON, res, "added")
}

func runDelPort(args []string, controlPath string, asJSON bool, out io.Writer) error {
	fs := newPortFlags("del-port", &controlPath, &asJSON)
	name, err := parseNamed(fs, args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), changeTimeout)
	defer cancel()
	var res control.PortChange
	if err := control.Do(ctx, controlPath, control.Request{Command: control.CmdDelPort, Name: name}, &res); err != nil {
		return fmt.Errorf("del-port %s: %w", name, err)
	}
	return printChange(out, asJSON, res, "deleted")
}

func printChange(out io.Writer, asJSON bool, res control.PortChange, what string) error {
	if asJSON {
		return json.NewEncoder(out).Encode(res)
	}
	fmt.Fprintf(out, "port %s %s", res.Port, what)
	if res.StateFile != "" {
		fmt.Fprintf(out, "; state saved to %s", res.StateFile)
	}
	fmt.Fprintln(out)
	return nil
}

func runDumpConfig(args []string, controlPath string, asJSON bool, out io.Writer) error {
	fs := newPortFlags("dump-config", &controlPath, &asJSON)
	if err := parseSub(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c config.Config
	if err := control.Call(ctx, controlPath, control.CmdDumpConfig, &c); err != nil {
		return fmt.Errorf("dump-config: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(c)
	}
	b, err := config.Marshal(c)
	if err != nil {
		return fmt.Errorf("dump-config: %w", err)
	}
	_, err = out.Write(b)
	return err
}
