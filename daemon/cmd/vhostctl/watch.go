package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/daemon/control"
)

// statsUsage is the part of vhostctl's usage text about stats.
const statsUsage = `  stats [--watch [--interval 1s] [--count N]]
          per-port packets, bytes and drops by reason. With --watch, rates
          every interval (at least 100ms): packets/s, bits/s, drops/s and the
          top drop reason, redrawn in place on a terminal, appended as
          timestamped blocks otherwise, one JSON object a line with --json.
          --count N stops after N refreshes (0: until Ctrl-C). Below the
          ports, each poller's busy share, frames/s and cycles per frame
`

// minWatchInterval is the shortest --interval: shorter, and the rates are
// mostly the noise of when the daemon happened to answer.
const minWatchInterval = 100 * time.Millisecond

// watchOptions say how `stats --watch` runs.
type watchOptions struct {
	control  string
	interval time.Duration
	count    int // refreshes before returning; 0: until ctx is done
	json     bool
	terminal bool             // redraw in place with ANSI escapes
	now      func() time.Time // the clock; time.Now but in tests
	// call asks the daemon; control.Call when nil.
	call func(ctx context.Context, path, command string, out any) error
}

// runStats is `vhostctl stats`. controlPath and asJSON are what was given
// before the command; its own flags (after it) win.
func runStats(args []string, controlPath string, asJSON bool, out io.Writer) error {
	fs := flag.NewFlagSet("vhostctl stats", flag.ContinueOnError)
	fs.StringVar(&controlPath, "control", controlPath, "vhostd control socket")
	fs.BoolVar(&asJSON, "json", asJSON, "print JSON for scripts (with --watch: one object a line per interval)")
	watch := fs.Bool("watch", false, "show rates, refreshed every --interval")
	interval := fs.Duration("interval", time.Second, "with --watch: time between refreshes (at least 100ms)")
	count := fs.Int("count", 0, "with --watch: stop after this many refreshes (0: until Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("stats: unexpected arguments %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if !*watch {
		if given["interval"] || given["count"] {
			return errors.New("stats: --interval and --count go with --watch")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var v []control.PortStats
		return show(ctx, controlPath, control.CmdStats, &v, asJSON, out, func() { printStats(out, v) })
	}
	if *interval < minWatchInterval {
		return fmt.Errorf("stats --watch: --interval %s is too short: give at least %s", *interval, minWatchInterval)
	}
	if *count < 0 {
		return fmt.Errorf("stats --watch: --count %d: give a number of refreshes, or 0 for no limit", *count)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return watchStats(ctx, watchOptions{control: controlPath, interval: *interval, count: *count, json: asJSON,
		terminal: !asJSON && isTerminal(out), now: time.Now}, out)
}

// isTerminal says whether out is a terminal.
func isTerminal(out io.Writer) bool {
	f, ok := out.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// watchStats polls stats every interval and prints the rates since the
// previous poll, until count refreshes are printed or ctx is done (Ctrl-C:
// not an error). The first poll failing is an error; a later one is
// printed and the next poll takes a new baseline (vhostd may have been
// restarted).
func watchStats(ctx context.Context, o watchOptions, out io.Writer) error {
	prev, prevAt, err := pollStats(ctx, o)
	if err != nil {
		return err
	}
	if o.terminal {
		fmt.Fprintf(out, "%s%s\n\nmeasuring...\n", clearScreen, watchHeader(o, prevAt, 0))
	}
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for n := 0; o.count == 0 || n < o.count; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur, at, err := pollStats(ctx, o)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			printWatchError(out, o, at, err)
			prev = poll{}
			continue
		}
		var rep rateReport
		var elapsed time.Duration
		if prev.ports != nil {
			elapsed = at.Sub(prevAt)
			rep = computeRates(prev.ports, cur.ports, elapsed)
			rep.Pollers = computePollerRates(prev.pollers, cur.pollers, elapsed.Seconds())
		} else {
			rep = computeRates(nil, cur.ports, 0)
		}
		if err := printRates(out, o, at, elapsed, rep); err != nil {
			return err
		}
		prev, prevAt = cur, at
	}
	return nil
}

// pollTimeout bounds one poll.
const pollTimeout = 5 * time.Second

// pollStats asks for the counters. Their time is halfway between asking
// and the answer: the daemon read them somewhere in between.
//
// The pollers' load comes with them, asked for just after; a daemon that
// does not know the command (an older vhostd) gives none, which is no
// error.
func pollStats(ctx context.Context, o watchOptions) (poll, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	before := o.now()
	call := o.call
	if call == nil {
		call = control.Call
	}
	var v poll
	err := call(ctx, o.control, control.CmdStats, &v.ports)
	after := o.now()
	if err == nil && call(ctx, o.control, control.CmdPollers, &v.pollers) != nil {
		v.pollers = nil
	}
	return v, before.Add(after.Sub(before) / 2), err
}

// poll is one answer of the daemon to `stats --watch`.
type poll struct {
	ports   []control.PortStats
	pollers []control.PollerStats
}

// ANSI escapes: clear the screen, cursor home, clear to the end of the
// line, clear from the cursor down.
const (
	clearScreen = "\x1b[H\x1b[2J"
	cursorHome  = "\x1b[H"
	clearEOL    = "\x1b[K"
	clearBelow  = "\x1b[J"
)

// redraw is text that draws block over the previous one: from the top
// left, each line cleared past its end, the rest of the screen cleared;
// not the whole screen first, which flickers.
func redraw(block string) string {
	return cursorHome + strings.ReplaceAll(block, "\n", clearEOL+"\n") + clearBelow
}

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// watchHeader is the line above each refresh.
func watchHeader(o watchOptions, at time.Time, elapsed time.Duration) string {
	h := fmt.Sprintf("%s  every %s", at.Format(timeFormat), o.interval)
	if elapsed > 0 {
		h += fmt.Sprintf(", measured over %s", elapsed.Round(time.Millisecond))
	}
	if o.terminal {
		h = "vhostctl stats --watch  " + h + "  (Ctrl-C quits)"
	}
	return h
}

// watchRecord is a refresh as JSON, one a line.
type watchRecord struct {
	Time      time.Time  `json:"time"`
	IntervalS float64    `json:"interval_sec"`
	ElapsedS  float64    `json:"elapsed_sec"` // measured between the polls; 0 when there was no earlier one
	Ports     []PortRate `json:"ports"`
	Removed   []string   `json:"removed,omitempty"` // ports gone since the previous poll
	// Pollers is each poller's load over the interval (none from a
	// vhostd without the pollers command).
	Pollers []PollerRate `json:"pollers,omitempty"`
	Error   string       `json:"error,omitempty"` // the poll failed: no ports
}

func printWatchError(out io.Writer, o watchOptions, at time.Time, err error) {
	switch {
	case o.json:
		b, _ := json.Marshal(watchRecord{Time: at, IntervalS: o.interval.Seconds(), Error: err.Error()})
		fmt.Fprintf(out, "%s\n", b)
	case o.terminal:
		io.WriteString(out, redraw(fmt.Sprintf("%s\n\n%v\n", watchHeader(o, at, 0), err)))
	default:
		fmt.Fprintf(out, "%s\n%v\n\n", watchHeader(o, at, 0), err)
	}
}

// printRates prints one refresh, in one write so that a terminal never
// shows half of one.
func printRates(out io.Writer, o watchOptions, at time.Time, elapsed time.Duration, rep rateReport) error {
	var b bytes.Buffer
	if o.json {
		rec := watchRecord{Time: at, IntervalS: o.interval.Seconds(), ElapsedS: elapsed.Seconds(), Ports: rep.Ports, Removed: rep.Removed, Pollers: rep.Pollers}
		if rec.Ports == nil {
			rec.Ports = []PortRate{}
		}
		if err := json.NewEncoder(&b).Encode(rec); err != nil {
			return err
		}
	} else {
		b.WriteString(watchHeader(o, at, elapsed) + "\n")
		if o.terminal {
			b.WriteString("\n")
		}
		printRateTable(&b, rep)
		if !o.terminal {
			b.WriteString("\n")
		}
	}
	if o.terminal {
		_, err := io.WriteString(out, redraw(b.String()))
		return err
	}
	_, err := out.Write(b.Bytes())
	return err
}

// printRateTable prints the rates as a table (names aligned left,
// numbers right, the top drop reason last), then the ports gone.
func printRateTable(out io.Writer, rep rateReport) {
	rows := [][]string{{"PORT", "RX-PKTS/S", "TX-PKTS/S", "RX-BITS/S", "TX-BITS/S", "DROPS/S", "TOP-DROP"}}
	for _, p := range rep.Ports {
		switch p.Status {
		case rateOK:
			top := "-"
			if p.TopDrop != "" {
				top = fmt.Sprintf("%s %s/s", p.TopDrop, formatRate(p.TopDropPS))
			}
			rows = append(rows, []string{p.Name, formatRate(p.RxPPS), formatRate(p.TxPPS),
				formatBits(p.RxBPS), formatBits(p.TxBPS), formatRate(p.DropsPS), top})
		case rateNew:
			rows = append(rows, []string{p.Name, "-", "-", "-", "-", "-", "(new port: rates from the next refresh)"})
		default:
			rows = append(rows, []string{p.Name, "-", "-", "-", "-", "-", "(counters went back: port re-added or vhostd restarted; rates from the next refresh)"})
		}
	}
	// Bit rates take a steady width, so that blocks line up.
	width := make([]int, len(rows[0]))
	width[3], width[4] = len("999.99 Mb/s"), len("999.99 Mb/s")
	printColumns(out, rows, width)
	for _, name := range rep.Removed {
		fmt.Fprintf(out, "%s: gone since the previous refresh\n", name)
	}
	// No blank line before the pollers: a blank line ends a refresh.
	printPollerRates(out, rep.Pollers)
}

// printColumns prints rows as a table: the first column aligned left, the
// last one unaligned (free text), the others aligned right, each at least
// as wide as width says (width may be nil).
func printColumns(out io.Writer, rows [][]string, width []int) {
	if len(rows) == 0 {
		return
	}
	w := make([]int, len(rows[0]))
	copy(w, width)
	for _, r := range rows {
		for i, c := range r {
			w[i] = max(w[i], len(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		b.Reset()
		last := len(r) - 1
		fmt.Fprintf(&b, "%-*s", w[0], r[0])
		for i := 1; i < last; i++ {
			fmt.Fprintf(&b, "  %*s", w[i], r[i])
		}
		fmt.Fprintf(&b, "  %s\n", r[last])
		io.WriteString(out, b.String())
	}
}
