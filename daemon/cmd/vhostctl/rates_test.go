package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
)

// ps is a port's counters: packets and bytes each way, and drops.
func ps(name string, rxp, rxb, txp, txb uint64, drops map[string]uint64) control.PortStats {
	return control.PortStats{Name: name, Snapshot: vswitch.Snapshot{RxPackets: rxp, RxBytes: rxb, TxPackets: txp, TxBytes: txb, Drops: drops}}
}

func TestComputeRates(t *testing.T) {
	prev := []control.PortStats{
		ps("a", 1000, 1_000_000, 500, 64_000, map[string]uint64{"tx_no_buffers": 10, "same_port": 1}),
		ps("gone", 5, 5, 5, 5, nil),
		ps("readded", 9000, 9_000_000, 0, 0, nil),
	}
	cur := []control.PortStats{
		// 2s later: 2000 more packets received, 2 MB; 1000 sent, 128 KB;
		// 30 more tx_no_buffers drops and 10 same_port ones.
		ps("a", 3000, 3_000_000, 1500, 192_000, map[string]uint64{"tx_no_buffers": 40, "same_port": 11}),
		ps("readded", 10, 10_000, 0, 0, nil),
		ps("fresh", 1, 1, 1, 1, nil),
	}
	got := computeRates(prev, cur, 2*time.Second)
	want := rateReport{
		Ports: []PortRate{
			{Name: "a", Status: rateOK, RxPPS: 1000, TxPPS: 500, RxBPS: 8_000_000, TxBPS: 512_000, DropsPS: 20,
				TopDrop: "tx_no_buffers", TopDropPS: 15, DropsByReason: map[string]float64{"tx_no_buffers": 15, "same_port": 5}},
			{Name: "readded", Status: rateReset},
			{Name: "fresh", Status: rateNew},
		},
		Removed: []string{"gone"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("computeRates =\n%+v\nwant\n%+v", got, want)
	}
}

// TestComputeRatesElapsed: rates are over the elapsed time given, not an
// interval; no elapsed time means no rates.
func TestComputeRatesElapsed(t *testing.T) {
	prev := []control.PortStats{ps("a", 0, 0, 0, 0, nil)}
	cur := []control.PortStats{ps("a", 150, 150_000, 0, 0, nil)}
	if r := computeRates(prev, cur, 1500*time.Millisecond).Ports[0]; r.RxPPS != 100 || r.RxBPS != 800_000 || r.TxPPS != 0 || r.DropsPS != 0 || r.TopDrop != "" {
		t.Errorf("over 1.5s: %+v", r)
	}
	if r := computeRates(prev, cur, 0).Ports[0]; r.Status != rateNew || r.RxPPS != 0 {
		t.Errorf("over 0s: %+v", r)
	}
	if r := computeRates(nil, cur, time.Second); len(r.Ports) != 1 || r.Ports[0].Status != rateNew || r.Removed != nil {
		t.Errorf("first poll: %+v", r)
	}
	if r := computeRates(prev, nil, time.Second); len(r.Ports) != 0 || !reflect.DeepEqual(r.Removed, []string{"a"}) {
		t.Errorf("every port gone: %+v", r)
	}
}

// TestComputeRatesReset: any counter going backwards resets the port,
// drops included, and a drop reason the daemon no longer reports too.
func TestComputeRatesReset(t *testing.T) {
	base := ps("a", 100, 100, 100, 100, map[string]uint64{"tx_no_buffers": 5})
	for name, cur := range map[string]control.PortStats{
		"rx packets": ps("a", 99, 200, 200, 200, map[string]uint64{"tx_no_buffers": 5}),
		"rx bytes":   ps("a", 200, 99, 200, 200, map[string]uint64{"tx_no_buffers": 5}),
		"tx packets": ps("a", 200, 200, 99, 200, map[string]uint64{"tx_no_buffers": 5}),
		"tx bytes":   ps("a", 200, 200, 200, 99, map[string]uint64{"tx_no_buffers": 5}),
		"drops":      ps("a", 200, 200, 200, 200, map[string]uint64{"tx_no_buffers": 4}),
		"no drops":   ps("a", 200, 200, 200, 200, nil),
	} {
		r := computeRates([]control.PortStats{base}, []control.PortStats{cur}, time.Second).Ports[0]
		if r.Status != rateReset || r.RxPPS != 0 || r.DropsPS != 0 {
			t.Errorf("%s went back: %+v", name, r)
		}
	}
	// Unchanged counters are no reset: zero rates.
	if r := computeRates([]control.PortStats{base}, []control.PortStats{base}, time.Second).Ports[0]; r.Status != rateOK || r.RxPPS != 0 {
		t.Errorf("unchanged: %+v", r)
	}
}

// TestTopDrop: the reason with most drops wins; on a tie the first in
// the switch's order, the same every time; unknown reasons count.
func TestTopDrop(t *testing.T) {
	prev := []control.PortStats{ps("a", 0, 0, 0, 0, map[string]uint64{})}
	cur := []control.PortStats{ps("a", 0, 0, 0, 0, map[string]uint64{"tx_too_big": 7, "tx_no_buffers": 7, "from_the_future": 3})}
	for i := 0; i < 20; i++ {
		r := computeRates(prev, cur, time.Second).Ports[0]
		if r.TopDrop != "tx_no_buffers" || r.TopDropPS != 7 || r.DropsPS != 17 {
			t.Fatalf("%+v", r)
		}
	}
}

func TestFormatUnits(t *testing.T) {
	for bps, want := range map[float64]string{
		0: "0 b/s", 999: "999 b/s", 1000: "1.00 Kb/s", 12_345: "12.35 Kb/s", 8_000_000: "8.00 Mb/s",
		999_000_000: "999.00 Mb/s", 10e9: "10.00 Gb/s", 1.5e12: "1500.00 Gb/s",
	} {
		if got := formatBits(bps); got != want {
			t.Errorf("formatBits(%v) = %q, want %q", bps, got, want)
		}
	}
	for r, want := range map[float64]string{0: "0", 0.5: "0.5", 9.94: "9.9", 10: "10", 1234.6: "1235"} {
		if got := formatRate(r); got != want {
			t.Errorf("formatRate(%v) = %q, want %q", r, got, want)
		}
	}
}
