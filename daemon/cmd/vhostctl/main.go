// Command vhostctl inspects a running vhostd through its control socket.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
)

const usage = `usage: vhostctl [--control PATH] [--json] COMMAND

commands:
  ports   ports with state, negotiated features and queues
  fdb     learned MAC addresses with their port and age ("static": pinned)
` + detailUsage + statsUsage + pollerUsage + traceUsage + portUsage + qemuUsage

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// The usage is printed; asking for it is not a failure.
			return
		}
		fmt.Fprintln(os.Stderr, "vhostctl:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("vhostctl", flag.ContinueOnError)
	path := fs.String("control", config.DefaultControl, "vhostd control socket")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Commands that talk to QEMU have flags of their own.
	if rest := fs.Args(); len(rest) > 0 && qemuCommands[rest[0]] != nil {
		return qemuCommands[rest[0]](rest[1:], *path, out)
	}
	if rest := fs.Args(); len(rest) > 0 && portCommands[rest[0]] != nil {
		return portCommands[rest[0]](rest[1:], *path, *asJSON, out)
	}
	if rest := fs.Args(); len(rest) > 0 && rest[0] == "stats" {
		return runStats(rest[1:], *path, *asJSON, out)
	}
	if rest := fs.Args(); len(rest) > 0 && rest[0] == "ports" && hasFlag(rest[1:], "detail") {
		return runPortsDetail(rest[1:], *path, *asJSON, out)
	}
	if rest := fs.Args(); len(rest) > 0 && rest[0] == "trace" {
		return runTrace(rest[1:], *path, *asJSON, out)
	}
	// Accept flags after the command too: vhostctl ports --json.
	rest := fs.Args()
	if len(rest) > 1 {
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
		rest = append(rest[:1], fs.Args()...)
	}
	if len(rest) != 1 {
		fs.Usage()
		return fmt.Errorf("expected one command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch rest[0] {
	case "ports":
		var v []control.PortInfo
		return show(ctx, *path, "ports", &v, *asJSON, out, func() { printPorts(out, v) })
	case "pollers":
		var v []control.PollerStats
		return show(ctx, *path, control.CmdPollers, &v, *asJSON, out, func() { printPollers(out, v) })
	case "fdb":
		var v []control.FDBEntry
		return show(ctx, *path, "fdb", &v, *asJSON, out, func() { printFDB(out, v) })
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", rest[0])
}

func show(ctx context.Context, path, cmd string, v any, asJSON bool, out io.Writer, table func()) error {
	if err := control.Call(ctx, path, cmd, v); err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	table()
	return nil
}

func join(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func printPorts(out io.Writer, ports []control.PortInfo) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PORT\tKIND\tSTATE\tPOLLERS\tSOCKET\tQUEUES\tFEATURES\tPROTOCOL\tMAC\tMACS")
	for _, p := range ports {
		var qs []string
		for _, r := range p.Vhost.Rings {
			s := fmt.Sprintf("%d:%d", r.Index, r.Size)
			switch {
			case r.Broken != "":
				s += "(broken)"
			case r.Running:
			case !r.Enabled:
				s += "(disabled)"
			default:
				s += "(stopped)"
			}
			qs = append(qs, s)
		}
		where := p.Vhost.Path
		if p.Vhost.Mode == vhost.ModeClient {
			where += " (client)" // vhostd connects to the frontend's socket
		}
		if p.Uplink != nil {
			where = p.Uplink.Devargs
		}
		var pollers []string
		for _, id := range p.Pollers {
			pollers = append(pollers, fmt.Sprint(id))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\n", p.Name, p.Kind, p.State, join(pollers), where, join(qs), join(p.Vhost.Features), join(p.Vhost.ProtocolFeatures),
			portMAC(p), p.LearnedMACs, p.MaxMACs)
	}
	w.Flush()
	printUplinks(out, ports)
	for _, p := range ports {
		switch {
		case p.State == "connecting" && p.Vhost.Attempts > 0:
			fmt.Fprintf(out, "%s: connecting to %s: %d attempts, the last %s ago: %s\n", p.Name, p.Vhost.Path, p.Vhost.Attempts,
				time.Since(p.Vhost.LastAttempt).Truncate(time.Millisecond), orNone(p.Vhost.LastError))
		case p.Vhost.LastError != "":
			fmt.Fprintf(out, "%s: last connection error: %s\n", p.Name, p.Vhost.LastError)
		}
		if n := p.Vhost.InternalErrors; n > 0 {
			fmt.Fprintf(out, "%s: internal_errors=%d (connections ended by a bug of vhostd's a request reached; the log has the stack)\n", p.Name, n)
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "no error yet"
	}
	return s
}

// portMAC says which source address a port may send from: "-" for any,
// its address, or for a "learn" port "learn:" and the address it locked
// to ("-" before its guest sent a frame).
func portMAC(p control.PortInfo) string {
	switch p.MAC {
	case "":
		return "-"
	case config.LearnMAC:
		if p.LockedMAC == "" {
			return "learn:-"
		}
		return "learn:" + p.LockedMAC
	}
	return p.MAC
}

func printFDB(out io.Writer, fdb []control.FDBEntry) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MAC\tPORT\tAGE")
	for _, e := range fdb {
		age := e.Age.Truncate(time.Second).String()
		if e.Static {
			age = "static" // pinned by port security: never ages
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", e.MAC, e.Port, age)
	}
	w.Flush()
}

func printStats(out io.Writer, stats []control.PortStats) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "PORT\tRX-PKTS\tRX-BYTES\tTX-PKTS\tTX-BYTES\tDROPS\t")
	for _, s := range stats {
		var drops uint64
		for _, n := range s.Drops {
			drops += n
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t\n", s.Name, s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes, drops)
	}
	w.Flush()
	for _, s := range stats {
		var reasons []string
		for _, name := range vswitch.DropNames {
			if n := s.Drops[name]; n > 0 {
				reasons = append(reasons, fmt.Sprintf("%s=%d", name, n))
			}
		}
		sort.Strings(reasons)
		if len(reasons) > 0 {
			fmt.Fprintf(out, "%s drops: %s\n", s.Name, strings.Join(reasons, " "))
		}
	}
	for _, s := range stats {
		if s.FDBMovesRefused+s.FDBLearnLimited+s.FDBFull > 0 {
			fmt.Fprintf(out, "%s source addresses not learned (frames forwarded): fdb_moves_refused=%d fdb_learn_limited=%d fdb_full=%d\n",
				s.Name, s.FDBMovesRefused, s.FDBLearnLimited, s.FDBFull)
		}
	}
	for _, s := range stats {
		if s.InternalErrors > 0 {
			fmt.Fprintf(out, "%s internal_errors=%d (bugs of vhostd's its frames reached, each of which dropped its connection; the log has the stack)\n", s.Name, s.InternalErrors)
		}
	}
	for _, s := range stats {
		if s.GSOPassed+s.GSOSegmented+s.CsumCompleted+s.GSOChanged > 0 {
			fmt.Fprintf(out, "%s offloads (frames delivered to it): gso_passed=%d gso_segmented=%d gso_segments=%d csum_completed=%d gso_changed=%d\n",
				s.Name, s.GSOPassed, s.GSOSegmented, s.GSOSegments, s.CsumCompleted, s.GSOChanged)
		}
	}
	printDeviceStats(out, stats)
	fmt.Fprintln(out, "(rx = frames the switch received from the port, i.e. sent by the guest or, on the uplink, from outside; tx = frames delivered to it)")
}

// hasFlag says whether args give flag name (-name, --name, --name=...).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}
