package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/daemon/control"
)

func TestPrintPollers(t *testing.T) {
	var out bytes.Buffer
	printPollers(&out, []control.PollerStats{
		{Poller: 0, Ports: []string{"vm1", "up0"}, BusyCycles: 3e9, IdleCycles: 1e9, BusySeconds: 1.5, IdleSeconds: 0.5, Frames: 1e7, Bursts: 5e5, TSCHz: 2e9, CPU: 3, Preempted: 12},
		{Poller: 1, IdleCycles: 4e9, IdleSeconds: 2, TSCHz: 2e9, CPU: -1, Preempted: 345},
	})
	want := `POLLER  CPU    BUSY    IDLE  BUSY%    FRAMES  BURSTS  FRAMES/BURST  CYCLES/FRAME  PREEMPTED  PORTS
0         3  1.500s  0.500s  75.0%  10000000  500000          20.0           300         12  vm1,up0
1         -  0.000s  2.000s   0.0%         0       0             -             -        345  -
(cycles: TSC at 2.000 GHz, measured against the monotonic clock)
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// stats --watch shows each poller's load over the interval under the
// ports: busy share, frames/s, cycles per frame and preemptions/s from
// the differences.
func TestWatchStatsPollers(t *testing.T) {
	d := watchScript()
	d.answers = d.answers[:2]
	d.pollers = [][]control.PollerStats{
		{{Poller: 0, Ports: []string{"a", "b"}, BusyCycles: 1000, IdleCycles: 1000, Frames: 10, TID: 7, Preempted: 100}, {Poller: 1, IdleCycles: 5000, TID: 8, Preempted: 5}},
		// Over 500ms: poller 0 busy 600 of 1000 cycles for 500 frames,
		// preempted 40 times; poller 1 idle throughout, on a new thread
		// (no preemption rate across threads).
		{{Poller: 0, Ports: []string{"a", "b"}, BusyCycles: 1600, IdleCycles: 1400, Frames: 510, TID: 7, Preempted: 140}, {Poller: 1, IdleCycles: 6000, TID: 9, Preempted: 1}},
	}
	ctl := startStatsDaemon(t, d)
	var out bytes.Buffer
	if err := watchStats(context.Background(), watchOptions{control: ctl, interval: minWatchInterval, count: 1, now: d.now}, &out); err != nil {
		t.Fatal(err)
	}
	want := `b             0          0        0 b/s        0 b/s        0  -
POLLER  BUSY%  FRAMES/S  CYCLES/FRAME  PREEMPTED/S  PORTS
0       60.0%      1000             1           80  a,b
1        0.0%         0             -            -  -

`
	if got := out.String(); !strings.HasSuffix(got, want) {
		t.Errorf("got\n%s\nwant it to end with\n%s", got, want)
	}

	d.calls, d.clock = 0, watchScript().clock
	out.Reset()
	if err := watchStats(context.Background(), watchOptions{control: ctl, interval: minWatchInterval, count: 1, json: true, now: d.now}, &out); err != nil {
		t.Fatal(err)
	}
	var rec watchRecord
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(rec.Pollers) != 2 || rec.Pollers[0].BusyPercent != 60 || rec.Pollers[0].FramesPS != 1000 || rec.Pollers[0].CyclesPerFrame != 1.2 || rec.Pollers[1].BusyPercent != 0 ||
		rec.Pollers[0].PreemptedPS != 80 || rec.Pollers[1].PreemptedPS != -1 {
		t.Errorf("pollers in JSON: %+v", rec.Pollers)
	}
}
