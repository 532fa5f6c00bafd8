package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/vhost"
)

// traceUsage is the part of vhostctl's usage text about trace.
const traceUsage = `  trace [--port NAME] [--json]
          live vhost-user trace of the VM ports (or one): every request and
          reply decoded field by field, NACKs, refusals, errors that end the
          connection, and ring state changes, until Ctrl-C. --json: one
          object a line
`

// runTrace is `vhostctl trace`.
func runTrace(args []string, controlPath string, asJSON bool, out io.Writer) error {
	fs := flag.NewFlagSet("vhostctl trace", flag.ContinueOnError)
	fs.StringVar(&controlPath, "control", controlPath, "vhostd control socket")
	fs.BoolVar(&asJSON, "json", asJSON, "one JSON object a line, for scripts")
	port := fs.String("port", "", "trace this VM port only (default: every VM port)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("trace: unexpected arguments %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return traceTo(ctx, controlPath, *port, asJSON, out, os.Stderr)
}

// traceTo prints the trace to out, and what is not an event (the ports
// traced, events lost) to info.
func traceTo(ctx context.Context, controlPath, port string, asJSON bool, out, info io.Writer) error {
	lost := map[string]uint64{}
	enc := json.NewEncoder(out)
	return control.Trace(ctx, controlPath, port,
		func(st control.TraceStart) error {
			fmt.Fprintf(info, "tracing %s (Ctrl-C stops)\n", strings.Join(st.Ports, ", "))
			return nil
		},
		func(e vhost.TraceEvent) error {
			if e.Lost > lost[e.Port] {
				fmt.Fprintf(info, "%s: %d events lost (this reader was too slow)\n", e.Port, e.Lost-lost[e.Port])
				lost[e.Port] = e.Lost
			}
			if asJSON {
				return enc.Encode(e)
			}
			_, err := io.WriteString(out, e.String()+"\n")
			return err
		})
}
