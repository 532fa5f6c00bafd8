package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
)

// statsDaemon answers stats with one scripted answer per call, the last
// one again when they run out, and moves its clock 500ms on per call: the
// watch loop's rates, timed by that clock, come out exact.
type statsDaemon struct {
	mu      sync.Mutex
	answers [][]control.PortStats
	pollers [][]control.PollerStats // answers to pollers, one per stats call; none if nil
	calls   int
	clock   time.Time
}

func (d *statsDaemon) now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.clock
}

func (d *statsDaemon) Stats() []control.PortStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clock = d.clock.Add(500 * time.Millisecond)
	a := d.answers[min(d.calls, len(d.answers)-1)]
	d.calls++
	return a
}
func (d *statsDaemon) Pollers() []control.PollerStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pollers == nil {
		return nil
	}
	return d.pollers[min(d.calls-1, len(d.pollers)-1)]
}
func (d *statsDaemon) Ports() []control.PortInfo { return nil }
func (d *statsDaemon) Trace(string) ([]control.PortTrace, error) {
	return nil, errors.New("fake: no trace")
}
func (d *statsDaemon) FDB() []vswitch.LearnedMAC { return nil }
func (d *statsDaemon) AddPort(config.Port) error { return errors.New("fake: no add-port") }
func (d *statsDaemon) DelPort(string) error      { return errors.New("fake: no del-port") }
func (d *statsDaemon) Config() config.Config     { return config.Config{} }

// startStatsDaemon serves d on a control socket in a temporary directory.
func startStatsDaemon(t *testing.T, d *statsDaemon) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vhostctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctl := filepath.Join(dir, "ctl.sock")
	log := logrus.New()
	log.SetOutput(&bytes.Buffer{})
	srv, err := control.Listen(ctl, d, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return ctl
}

// watchScript is four polls, 500ms apart by the fake clock: a baseline;
// a and b carrying traffic; b gone and c new; a's counters back to
// small numbers (vhostd restarted) while c carries traffic.
func watchScript() *statsDaemon {
	drops := func(noBuf, same uint64) map[string]uint64 {
		return map[string]uint64{"tx_no_buffers": noBuf, "same_port": same}
	}
	return &statsDaemon{
		clock: time.Date(2026, 12, 4, 17, 0, 0, 0, time.UTC),
		answers: [][]control.PortStats{
			{ps("a", 0, 0, 0, 0, drops(0, 0)), ps("b", 100, 6400, 100, 6400, nil)},
			// a: 500 frames of 1000 bytes received, 250 of 125 sent,
			// 50 tx_no_buffers and 10 same_port drops; b idle.
			{ps("a", 500, 500_000, 250, 31_250, drops(50, 10)), ps("b", 100, 6400, 100, 6400, nil)},
			{ps("a", 1000, 1_000_000, 500, 62_500, drops(100, 20)), ps("c", 0, 0, 0, 0, nil)},
			{ps("a", 3, 3000, 0, 0, drops(0, 0)), ps("c", 5_000_000, 625_000_000, 0, 0, nil)},
		},
	}
}

// TestWatchStats runs stats --watch --count 3 against a fake daemon with
// output that is not a terminal: appended blocks, timestamped, no
// escapes, rates over the measured time.
func TestWatchStats(t *testing.T) {
	d := watchScript()
	ctl := startStatsDaemon(t, d)
	var out bytes.Buffer
	err := watchStats(context.Background(), watchOptions{control: ctl, interval: minWatchInterval, count: 3, now: d.now}, &out)
	if err != nil {
		t.Fatal(err)
	}
	want := `2026-12-04T17:00:00.750Z  every 100ms, measured over 500ms
PORT  RX-PKTS/S  TX-PKTS/S    RX-BITS/S    TX-BITS/S  DROPS/S  TOP-DROP
a          1000        500    8.00 Mb/s  500.00 Kb/s      120  tx_no_buffers 100/s
b             0          0        0 b/s        0 b/s        0  -

2026-12-04T17:00:01.250Z  every 100ms, measured over 500ms
PORT  RX-PKTS/S  TX-PKTS/S    RX-BITS/S    TX-BITS/S  DROPS/S  TOP-DROP
a          1000        500    8.00 Mb/s  500.00 Kb/s      120  tx_no_buffers 100/s
c             -          -            -            -        -  (new port: rates from the next refresh)
b: gone since the previous refresh

2026-12-04T17:00:01.750Z  every 100ms, measured over 500ms
PORT  RX-PKTS/S  TX-PKTS/S    RX-BITS/S    TX-BITS/S  DROPS/S  TOP-DROP
a             -          -            -            -        -  (counters went back: port re-added or vhostd restarted; rates from the next refresh)
c      10000000          0   10.00 Gb/s        0 b/s        0  -

`
	if got := out.String(); got != want {
		t.Errorf("watch printed\n%s\nwant\n%s", got, want)
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Error("escape codes in output that is not a terminal")
	}
}

// TestWatchStatsJSON: --watch --json prints one object per refresh per
// line.
func TestWatchStatsJSON(t *testing.T) {
	d := watchScript()
	ctl := startStatsDaemon(t, d)
	var out bytes.Buffer
	if err := watchStats(context.Background(), watchOptions{control: ctl, interval: minWatchInterval, count: 3, json: true, now: d.now}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out.String())
	}
	var recs []watchRecord
	for _, l := range lines {
		var r watchRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		recs = append(recs, r)
	}
	a := recs[0].Ports[0]
	if recs[0].ElapsedS != 0.5 || recs[0].IntervalS != 0.1 || a.Name != "a" || a.Status != rateOK || a.RxPPS != 1000 || a.TxBPS != 500_000 ||
		a.DropsPS != 120 || a.TopDrop != "tx_no_buffers" || a.TopDropPS != 100 || a.DropsByReason["same_port"] != 20 {
		t.Errorf("first refresh: %s", lines[0])
	}
	if len(recs[1].Removed) != 1 || recs[1].Removed[0] != "b" || recs[1].Ports[1].Status != rateNew {
		t.Errorf("second refresh: %s", lines[1])
	}
	if recs[2].Ports[0].Status != rateReset || recs[2].Ports[1].RxBPS != 10e9 {
		t.Errorf("third refresh: %s", lines[2])
	}
	if !strings.Contains(lines[0], `"rx_packets_per_sec":1000`) || !strings.Contains(lines[0], `"time":"2026-12-04T17:00:00.75Z"`) {
		t.Errorf("field names: %s", lines[0])
	}
}

// TestWatchStatsTerminal: on a terminal each refresh redraws the screen.
func TestWatchStatsTerminal(t *testing.T) {
	d := watchScript()
	ctl := startStatsDaemon(t, d)
	var out bytes.Buffer
	if err := watchStats(context.Background(), watchOptions{control: ctl, interval: minWatchInterval, count: 2, terminal: true, now: d.now}, &out); err != nil {
		t.Fatal(err)
	}
	// The screen cleared once, at "measuring...", then two refreshes
	// drawn over it.
	if !strings.HasPrefix(out.String(), clearScreen) || strings.Count(out.String(), clearScreen) != 1 || strings.Count(out.String(), cursorHome) != 3 ||
		strings.Count(out.String(), clearBelow) != 2 || !strings.Contains(out.String(), "a          1000        500    8.00 Mb/s  500.00 Kb/s      120  tx_no_buffers 100/s"+clearEOL+"\n") {
		t.Errorf("terminal output:\n%q", out.String())
	}
	if !strings.Contains(out.String(), "vhostctl stats --watch  2026-12-04T17:00:00.750Z  every 100ms") {
		t.Errorf("no header:\n%s", out.String())
	}
}

// TestWatchStatsPollError: a poll that fails mid-watch (vhostd
// restarting) is reported and the watch goes on, from a new baseline.
func TestWatchStatsPollError(t *testing.T) {
	d := watchScript()
	d.answers = d.answers[:2]
	ctl := startStatsDaemon(t, d)
	calls := 0
	call := func(ctx context.Context, path, cmd string, out any) error {
		if cmd != control.CmdStats {
			return control.Call(ctx, path, cmd, out)
		}
		calls++
		if calls == 3 {
			d.Stats() // the clock moves on
			return errors.New("connect to vhostd: gone")
		}
		return control.Call(ctx, path, cmd, out)
	}
	for _, asJSON := range []bool{false, true} {
		calls, d.calls, d.clock = 0, 0, watchScript().clock
		var out bytes.Buffer
		if err := watchStats(context.Background(), watchOptions{control: ctl, interval: minWatchInterval, count: 4, json: asJSON, now: d.now, call: call}, &out); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		if asJSON {
			if want := `{"time":"2026-12-04T17:00:01.25Z","interval_sec":0.1,"elapsed_sec":0,"ports":null,"error":"connect to vhostd: gone"}` + "\n"; !strings.Contains(got, want) {
				t.Errorf("--json: no %s in\n%s", want, got)
			}
			if n := strings.Count(got, "\n"); n != 4 {
				t.Errorf("--json: %d lines, want 4:\n%s", n, got)
			}
			continue
		}
		for _, want := range []string{
			"2026-12-04T17:00:01.250Z  every 100ms\nconnect to vhostd: gone\n\n",
			"a             -          -            -            -        -  (new port: rates from the next refresh)\n",
			"2026-12-04T17:00:02.250Z  every 100ms, measured over 500ms\n",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("no %q in\n%s", want, got)
			}
		}
	}
}

// TestWatchStatsStops: a cancelled context (Ctrl-C) ends the watch
// without error; no daemon at the start is an error.
func TestWatchStatsStops(t *testing.T) {
	d := watchScript()
	ctl := startStatsDaemon(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	var out bytes.Buffer
	go func() {
		done <- watchStats(ctx, watchOptions{control: ctl, interval: minWatchInterval, now: d.now}, &out)
	}()
	time.Sleep(250 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("cancelled watch: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not stop when cancelled")
	}

	if err := watchStats(context.Background(), watchOptions{control: "/nonexistent/ctl.sock", interval: minWatchInterval, count: 1, now: time.Now}, &out); err == nil || !strings.Contains(err.Error(), "is vhostd running?") {
		t.Errorf("watch without a daemon: %v", err)
	}
}

func TestStatsFlags(t *testing.T) {
	d := watchScript()
	ctl := startStatsDaemon(t, d)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"stats", "--watch", "--interval", "50ms"}, "--interval 50ms is too short: give at least 100ms"},
		{[]string{"stats", "--watch", "--count", "-1"}, "--count -1"},
		{[]string{"stats", "--interval", "1s"}, "--interval and --count go with --watch"},
		{[]string{"stats", "--count", "2"}, "--interval and --count go with --watch"},
		{[]string{"stats", "--watch", "--interval", "fast"}, "invalid value"},
		{[]string{"stats", "extra"}, "unexpected arguments"},
	} {
		_, err := vhostctl(t, append([]string{"--control", ctl}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("vhostctl %v: %v, want %q", c.args, err, c.want)
		}
	}
	// --json before or after the command, without --watch: the counters,
	// as before.
	for _, args := range [][]string{{"--json", "stats"}, {"stats", "--json"}} {
		out, err := vhostctl(t, append([]string{"--control", ctl}, args...)...)
		var got []control.PortStats
		if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 || got[1].Name != "b" || !strings.HasPrefix(out, "[\n  {") {
			t.Errorf("vhostctl %v: %v\n%s", args, err, out)
		}
	}
	// A watch through run: flags after the command.
	out, err := vhostctl(t, "stats", "--control", ctl, "--watch", "--interval", "100ms", "--count", "1")
	if err != nil || !strings.Contains(out, "RX-BITS/S") {
		t.Errorf("vhostctl stats --watch: %v\n%s", err, out)
	}
}
