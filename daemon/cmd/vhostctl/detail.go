package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
)

// detailUsage is the part of vhostctl's usage text about ports --detail.
const detailUsage = `  ports --detail NAME [--json]
          the port's negotiation report: features offered, masked and acked,
          protocol features, header layout, each queue's setup, and every
          violation of the specifications its frontend made, with the section
          (on the data path: each ring's, counted, the first one described)
`

// runPortsDetail is `vhostctl ports --detail NAME`.
func runPortsDetail(args []string, controlPath string, asJSON bool, out io.Writer) error {
	fs := flag.NewFlagSet("vhostctl ports", flag.ContinueOnError)
	fs.StringVar(&controlPath, "control", controlPath, "vhostd control socket")
	fs.BoolVar(&asJSON, "json", asJSON, "print JSON for scripts")
	name := fs.String("detail", "", "the port to report on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" && fs.NArg() == 1 {
		*name = fs.Arg(0) // vhostctl ports --detail= NAME
	} else if fs.NArg() > 0 {
		return fmt.Errorf("ports: unexpected arguments %q", fs.Args())
	}
	if *name == "" {
		return fmt.Errorf("ports --detail: name a port")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ports []control.PortInfo
	if err := control.Call(ctx, controlPath, control.CmdPorts, &ports); err != nil {
		return err
	}
	var names []string
	for _, p := range ports {
		if p.Name != *name {
			names = append(names, p.Name)
			continue
		}
		if asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(p)
		}
		printDetail(out, p)
		return nil
	}
	return fmt.Errorf("no port %q (ports: %s)", *name, strings.Join(names, ", "))
}

// printDetail prints a port's negotiation report.
func printDetail(out io.Writer, p control.PortInfo) {
	v := p.Vhost
	fmt.Fprintf(out, "port %s (%s): %s\n", p.Name, p.Kind, p.State)
	if p.Uplink != nil {
		fmt.Fprintln(out, "the DPDK uplink has no vhost-user negotiation")
		printUplinkOffloads(out, p.Name, p.Uplink)
		return
	}
	fmt.Fprintf(out, "socket %s (%s)\n", v.Path, v.Mode)
	list := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, " ")
	}
	fmt.Fprintf(out, "\nvirtio features\n  offered   %s\n  masked    %s\n", list(v.Offered), list(v.Masked))
	if v.Negotiated {
		fmt.Fprintf(out, "  acked     %s\n", list(v.Features))
	} else {
		fmt.Fprintln(out, "  acked     (no SET_FEATURES yet)")
	}
	fmt.Fprintf(out, "protocol features\n  offered   %s\n  acked     %s\n", list(v.OfferedProtocol), list(v.ProtocolFeatures))
	switch v.HdrLen {
	case 0:
		fmt.Fprintln(out, "header    (no ring running)")
	case 12:
		fmt.Fprintln(out, "header    12 bytes (virtio_net_hdr with num_buffers: VERSION_1 or MRG_RXBUF)")
	default:
		fmt.Fprintf(out, "header    %d bytes (legacy virtio_net_hdr, no num_buffers)\n", v.HdrLen)
	}
	if v.MTU > 0 {
		fmt.Fprintf(out, "mtu       %d\n", v.MTU)
	}
	fmt.Fprintf(out, "memory    %d regions\n", v.MemRegions)
	if len(v.Rings) > 0 {
		rows := [][]string{{"RING", "SIZE", "STATE", "KICK", "CALL", "DESC", "AVAIL", "USED", "LOG"}}
		for _, r := range v.Rings {
			state := "stopped"
			switch {
			case r.Broken != "":
				state = "broken: " + r.Broken
			case r.Running:
				state = "running"
			case !r.Enabled:
				state = "disabled"
			}
			kick, call, logged := r.Kick, "-", "-"
			if kick == "" {
				kick = "-"
			}
			if r.Call {
				call = "eventfd"
			}
			if r.Log {
				logged = fmt.Sprintf("%#x", r.LogAddr)
			}
			rows = append(rows, []string{fmt.Sprint(r.Index), fmt.Sprint(r.Size), state, kick, call,
				fmt.Sprintf("%#x", r.Desc), fmt.Sprintf("%#x", r.Avail), fmt.Sprintf("%#x", r.Used), logged})
		}
		io.WriteString(out, "\n")
		printColumns(out, rows, nil)
	}
	fmt.Fprintln(out)
	if len(v.Violations) == 0 {
		fmt.Fprintln(out, "violations: none")
		return
	}
	// Requests' violations are kept one by one (the first few); the data
	// path's are counted, one entry per ring and kind.
	fmt.Fprintf(out, "violations: %d", v.ViolationsSeen)
	kept, requests := 0, 0
	for _, x := range v.Violations {
		if x.Count > 0 {
			kept += int(x.Count)
		} else {
			kept++
			requests++
		}
	}
	if v.ViolationsSeen > kept {
		fmt.Fprintf(out, " (the first %d of the requests' kept)", requests)
	}
	fmt.Fprintln(out)
	for _, x := range v.Violations {
		src := x.Request
		if src == "" {
			src = "data path"
		}
		if x.Count > 1 {
			src += fmt.Sprintf(", %d times", x.Count)
		}
		fmt.Fprintf(out, "  %s %s: %s\n      breaks %s\n", x.Time.Format("15:04:05.000"), src, x.What, x.Spec)
	}
}
