package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/vhostd/vhostd/qemu"
)

// portList is a repeatable --port flag.
type portList []string

func (l *portList) String() string     { return strings.Join(*l, ",") }
func (l *portList) Set(s string) error { *l = append(*l, s); return nil }

func runQEMUArgs(args []string, controlPath string, out io.Writer) error {
	fs := newSubFlags("qemu-args", &controlPath)
	var ports portList
	fs.Var(&ports, "port", "vhostd port to attach (repeatable: one NIC each)")
	mac := fs.String("mac", "", "guest MAC address, with a single --port (default: derived from the port name)")
	mem := fs.Int("mem", qemu.DefaultMemoryMB, "guest RAM in MiB (a shared memfd)")
	reconnect := fs.Int("reconnect", 1, "seconds between QEMU's attempts to reconnect after vhostd restarts; 0: never")
	if err := parseSub(fs, args); err != nil {
		return err
	}
	if len(ports) == 0 {
		return errors.New("qemu-args: --port is required")
	}
	if *mac != "" && len(ports) > 1 {
		return errors.New("qemu-args: --mac goes with a single --port")
	}
	if *mem <= 0 {
		return fmt.Errorf("qemu-args: --mem %d: must be positive", *mem)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	argv := qemu.SharedMemoryArgs(*mem)
	for i, name := range ports {
		p, err := lookupPort(ctx, controlPath, name)
		if err != nil {
			return fmt.Errorf("qemu-args: %w", err)
		}
		m, err := macFor(name, *mac)
		if err != nil {
			return fmt.Errorf("qemu-args: %w", err)
		}
		argv = append(argv, qemu.NICArgs(qemu.NIC{SocketPath: p.Vhost.Path, MAC: m, Reconnect: *reconnect, HostMTU: p.Vhost.MTU}, i)...)
	}
	// One option and its value per line, ready to paste into a shell.
	var lines []string
	for i := 0; i+1 < len(argv); i += 2 {
		lines = append(lines, argv[i]+" "+shellQuote(argv[i+1]))
	}
	_, err := fmt.Fprintln(out, strings.Join(lines, " \\\n"))
	return err
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
