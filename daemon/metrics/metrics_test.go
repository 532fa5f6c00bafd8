package metrics_test

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/daemon/metrics"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
)

// fakeSource answers as a daemon with a VM port "a" (running, 2 of 3
// rings running), a VM port "b" (listening) and a DPDK uplink "up0".
type fakeSource struct{}

func (fakeSource) Stats() []control.PortStats {
	drops := func(reason string, n uint64) map[string]uint64 {
		m := map[string]uint64{}
		for _, r := range vswitch.DropNames {
			m[r] = 0
		}
		m[reason] = n
		return m
	}
	return []control.PortStats{
		{Name: "up0", Snapshot: vswitch.Snapshot{RxPackets: 1, RxBytes: 60, Drops: drops("tx_uplink_full", 4)},
			DPDK: &control.DPDKStats{RxPackets: 11, TxPackets: 12, RxBytes: 13, TxBytes: 14, RxMissed: 15, RxErrors: 16, TxErrors: 17, RxNoMbuf: 18}},
		{Name: "a", Snapshot: vswitch.Snapshot{RxPackets: 100, RxBytes: 6000, TxPackets: 200, TxBytes: 12000,
			Drops: drops("tx_no_buffers", 7), FDBMovesRefused: 2, FDBLearnLimited: 3, FDBFull: 5},
			Queues: []vswitch.QueueSnapshot{
				{Queue: 0, Dir: "rx", Snapshot: vswitch.Snapshot{RxPackets: 60, RxBytes: 3600}},
				{Queue: 1, Dir: "rx", Snapshot: vswitch.Snapshot{RxPackets: 40, RxBytes: 2400, Drops: map[string]uint64{"rx_runt": 1}}},
				{Queue: 0, Dir: "tx", Snapshot: vswitch.Snapshot{TxPackets: 200, TxBytes: 12000, Drops: drops("tx_no_buffers", 7)}},
			}},
		{Name: "b", Snapshot: vswitch.Snapshot{Drops: drops("rx_runt", 0)}},
	}
}

func (fakeSource) Ports() []control.PortInfo {
	return []control.PortInfo{
		{Name: "up0", Kind: "dpdk", State: "up", MaxMACs: 8192, Uplink: &control.UplinkInfo{LinkUp: true,
			TxOffloads: []string{"TCP_CKSUM", "TCP_TSO"}, RxOffloads: []string{"TCP_LRO"},
			Offloads: control.UplinkOffloads{TxCsum: 21, TxTSOSegLimit: 27, RxLRO: 22, RxCsumPartial: 23, RxCsumGood: 24, RxCsumBad: 25, RxOffloadInvalid: 26}}},
		{Name: "a", Kind: "vhost-user", State: "running", MaxMACs: 64, LearnedMACs: 1, Vhost: vhost.Status{Connected: true, Connections: 3, Negotiations: 4,
			Rings: []vhost.RingStatus{{Index: 0, Running: true}, {Index: 1, Running: true}, {Index: 2}}}},
		{Name: "b", Kind: "vhost-user", State: "listening", MaxMACs: 64},
	}
}

func (fakeSource) Pollers() []control.PollerStats {
	return []control.PollerStats{
		{Poller: 0, Ports: []string{"a", "up0"}, BusyCycles: 3e9, IdleCycles: 1e9, BusySeconds: 1.5, IdleSeconds: 0.5, Frames: 1e6, Bursts: 4e4, TSCHz: 2e9, CPU: 3, Preempted: 7},
		{Poller: 1, Ports: []string{}, IdleCycles: 4e9, IdleSeconds: 2, TSCHz: 2e9, CPU: -1},
	}
}

func (fakeSource) FDBCounts() (vswitch.FDBCounts, int) {
	return vswitch.FDBCounts{Learned: 40, Moved: 3, Evicted: 2}, 8192
}

func (fakeSource) FDB() []control.FDBEntry {
	return []control.FDBEntry{
		{MAC: "02:00:00:00:00:0a", Port: "a"},
		{MAC: "02:00:00:00:00:0c", Port: "a", Static: true},
		{MAC: "02:00:00:00:00:0b", Port: "up0"},
	}
}

// scrape serves the collector over HTTP and parses /metrics.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	s, err := metrics.Listen("127.0.0.1:0", fakeSource{}, logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the value of the series of family name with exactly the
// given labels (name, value pairs), and whether it exists.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		for i, l := range m.GetLabel() {
			// Labels come sorted by name; so are the ones given here.
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestCollector(t *testing.T) {
	fams := scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"vhostd_port_rx_packets_total", []string{"port", "a"}, 100},
		{"vhostd_port_rx_bytes_total", []string{"port", "a"}, 6000},
		{"vhostd_port_tx_packets_total", []string{"port", "a"}, 200},
		{"vhostd_port_tx_bytes_total", []string{"port", "a"}, 12000},
		{"vhostd_port_rx_packets_total", []string{"port", "up0"}, 1},
		{"vhostd_port_tx_packets_total", []string{"port", "b"}, 0},
		{"vhostd_port_drops_total", []string{"port", "a", "reason", "tx_no_buffers"}, 7},
		{"vhostd_port_drops_total", []string{"port", "a", "reason", "rx_runt"}, 0},
		{"vhostd_port_drops_total", []string{"port", "up0", "reason", "tx_uplink_full"}, 4},
		{"vhostd_port_fdb_moves_refused_total", []string{"port", "a"}, 2},
		{"vhostd_port_fdb_learn_limited_total", []string{"port", "a"}, 3},
		{"vhostd_port_fdb_full_total", []string{"port", "a"}, 5},
		{"vhostd_fdb_entries", nil, 3},
		{"vhostd_port_fdb_entries", []string{"port", "a"}, 2},
		{"vhostd_port_fdb_entries", []string{"port", "up0"}, 1},
		{"vhostd_port_fdb_entries", []string{"port", "b"}, 0},
		{"vhostd_port_learned_macs", []string{"port", "a"}, 1},
		{"vhostd_port_max_macs", []string{"port", "a"}, 64},
		{"vhostd_port_connected", []string{"port", "a"}, 1},
		{"vhostd_port_connected", []string{"port", "b"}, 0},
		{"vhostd_port_rings_running", []string{"port", "a"}, 2},
		{"vhostd_port_rings_running", []string{"port", "b"}, 0},
		{"vhostd_port_state", []string{"port", "a", "state", "running"}, 1},
		{"vhostd_port_state", []string{"port", "a", "state", "listening"}, 0},
		{"vhostd_port_state", []string{"port", "b", "state", "listening"}, 1},
		{"vhostd_port_state", []string{"port", "up0", "state", "up"}, 1},
		{"vhostd_port_state", []string{"port", "up0", "state", "down"}, 0},
		{"vhostd_uplink_link_up", []string{"port", "up0"}, 1},
		{"vhostd_uplink_rx_packets_total", []string{"port", "up0"}, 11},
		{"vhostd_uplink_tx_packets_total", []string{"port", "up0"}, 12},
		{"vhostd_uplink_rx_bytes_total", []string{"port", "up0"}, 13},
		{"vhostd_uplink_tx_bytes_total", []string{"port", "up0"}, 14},
		{"vhostd_uplink_rx_missed_total", []string{"port", "up0"}, 15},
		{"vhostd_uplink_rx_errors_total", []string{"port", "up0"}, 16},
		{"vhostd_uplink_tx_errors_total", []string{"port", "up0"}, 17},
		{"vhostd_uplink_rx_nombuf_total", []string{"port", "up0"}, 18},
		{"vhostd_uplink_stats_error", []string{"port", "up0"}, 0},
		{"vhostd_uplink_tx_csum_offloaded_total", []string{"port", "up0"}, 21},
		{"vhostd_uplink_tx_tso_seg_limit_total", []string{"port", "up0"}, 27},
		{"vhostd_uplink_rx_lro_total", []string{"port", "up0"}, 22},
		{"vhostd_uplink_rx_csum_partial_total", []string{"port", "up0"}, 23},
		{"vhostd_uplink_rx_csum_good_total", []string{"port", "up0"}, 24},
		{"vhostd_uplink_rx_csum_bad_total", []string{"port", "up0"}, 25},
		{"vhostd_uplink_rx_offload_invalid_total", []string{"port", "up0"}, 26},
		{"vhostd_uplink_offload", []string{"dir", "tx", "offload", "TCP_CKSUM", "port", "up0"}, 1},
		{"vhostd_uplink_offload", []string{"dir", "tx", "offload", "TCP_TSO", "port", "up0"}, 1},
		{"vhostd_uplink_offload", []string{"dir", "rx", "offload", "TCP_LRO", "port", "up0"}, 1},
		{"vhostd_poller_busy_seconds_total", []string{"poller", "0"}, 1.5},
		{"vhostd_poller_idle_seconds_total", []string{"poller", "0"}, 0.5},
		{"vhostd_poller_idle_seconds_total", []string{"poller", "1"}, 2},
		{"vhostd_poller_busy_cycles_total", []string{"poller", "0"}, 3e9},
		{"vhostd_poller_frames_total", []string{"poller", "0"}, 1e6},
		{"vhostd_poller_bursts_total", []string{"poller", "0"}, 4e4},
		{"vhostd_poller_preemptions_total", []string{"poller", "0"}, 7},
		{"vhostd_poller_cpu", []string{"poller", "0"}, 3},
		{"vhostd_poller_cpu", []string{"poller", "1"}, -1},
		{"vhostd_poller_ports", []string{"poller", "0", "port", "a"}, 1},
		{"vhostd_poller_ports", []string{"poller", "0", "port", "up0"}, 1},
		{"vhostd_tsc_hz", nil, 2e9},
		{"vhostd_queue_packets_total", []string{"dir", "rx", "port", "a", "queue", "0"}, 60},
		{"vhostd_queue_packets_total", []string{"dir", "rx", "port", "a", "queue", "1"}, 40},
		{"vhostd_queue_bytes_total", []string{"dir", "rx", "port", "a", "queue", "1"}, 2400},
		{"vhostd_queue_packets_total", []string{"dir", "tx", "port", "a", "queue", "0"}, 200},
		{"vhostd_queue_drops_total", []string{"dir", "rx", "port", "a", "queue", "1", "reason", "rx_runt"}, 1},
		{"vhostd_queue_drops_total", []string{"dir", "tx", "port", "a", "queue", "0", "reason", "tx_no_buffers"}, 7},
		{"vhostd_fdb_capacity", nil, 8192},
		{"vhostd_fdb_learned_total", nil, 40},
		{"vhostd_fdb_moved_total", nil, 3},
		{"vhostd_fdb_evicted_total", nil, 2},
		{"vhostd_port_connections_total", []string{"port", "a"}, 3},
		{"vhostd_port_negotiations_total", []string{"port", "a"}, 4},
	} {
		got, ok := value(fams, c.name, c.labels...)
		if !ok {
			t.Errorf("no %s%v", c.name, c.labels)
		} else if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Every drop reason, for every port.
	if n := len(fams["vhostd_port_drops_total"].GetMetric()); n != 3*len(vswitch.DropNames) {
		t.Errorf("%d vhostd_port_drops_total series, want %d", n, 3*len(vswitch.DropNames))
	}
	for _, r := range vswitch.DropNames {
		if _, ok := value(fams, "vhostd_port_drops_total", "port", "b", "reason", r); !ok {
			t.Errorf("no drop reason %s for port b", r)
		}
	}
	// Counters are counters, gauges gauges.
	for name, f := range fams {
		if !strings.HasPrefix(name, "vhostd_") {
			continue
		}
		if strings.HasSuffix(name, "_total") != (f.GetType() == dto.MetricType_COUNTER) {
			t.Errorf("%s is a %v", name, f.GetType())
		}
	}
	// VM ports only: an uplink has no frontend.
	if _, ok := value(fams, "vhostd_port_connected", "port", "up0"); ok {
		t.Error("vhostd_port_connected for the uplink")
	}
	if _, ok := value(fams, "vhostd_uplink_rx_packets_total", "port", "a"); ok {
		t.Error("uplink counters for a VM port")
	}
	if _, ok := value(fams, "vhostd_uplink_rx_lro_total", "port", "a"); ok {
		t.Error("uplink offload counters for a VM port")
	}
	// One offload series per configured offload, no more.
	if n := len(fams["vhostd_uplink_offload"].GetMetric()); n != 3 {
		t.Errorf("%d vhostd_uplink_offload series, want 3", n)
	}
	// The runtime's own metrics come along.
	if fams["go_goroutines"] == nil || fams["process_start_time_seconds"] == nil {
		t.Error("no go_ or process_ metrics")
	}
}

func TestHealthz(t *testing.T) {
	s, err := metrics.Listen("127.0.0.1:0", fakeSource{}, logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + s.Addr().String() + "/healthz"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok" {
		t.Errorf("/healthz: %s %q", resp.Status, b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(url); err == nil {
		t.Error("/healthz still answers after Close")
	}
}

func TestCheckAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1:9480", ":9480", "[::1]:0", "localhost:9480"} {
		if err := metrics.CheckAddr(a); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for _, a := range []string{":x", "127.0.0.1", "127.0.0.1:70000", "", "a b:1"} {
		err := metrics.CheckAddr(a)
		if err == nil || !strings.HasPrefix(err.Error(), "metrics address ") {
			t.Errorf("%q: %v", a, err)
		}
	}
	// A port in use is an error at Listen.
	s, err := metrics.Listen("127.0.0.1:0", fakeSource{}, logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := metrics.Listen(s.Addr().String(), fakeSource{}, logrus.NewEntry(logrus.New())); err == nil {
		s2.Close()
		t.Error("a second listener on the same address")
	} else if !strings.Contains(err.Error(), "metrics address") {
		t.Errorf("port in use: %v", err)
	}
}

// TestREADMENamesEveryMetric: every metric the collector registers, and
// every drop reason its reason label takes, is in the README's tables,
// which users' dashboards and alerts are written from. The uplink's
// device counters may be named by their suffix after the first one
// (`vhostd_uplink_rx_packets_total`, `_tx_packets_total`, ...).
func TestREADMENamesEveryMetric(t *testing.T) {
	src, err := os.ReadFile("metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(readme)
	names := regexp.MustCompile(`desc\("([a-z0-9_]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(names) < 50 {
		t.Fatalf("found %d metric names in metrics.go: has desc changed?", len(names))
	}
	for _, m := range names {
		name := m[1]
		if strings.Contains(doc, "`vhostd_"+name+"`") || strings.Contains(doc, "`vhostd_"+name+"{") {
			continue
		}
		if s, ok := strings.CutPrefix(name, "uplink_"); ok && strings.Contains(doc, "`_"+s+"`") {
			continue
		}
		t.Errorf("metric vhostd_%s is not in README.md's metrics table", name)
	}
	for _, d := range vswitch.DropNames {
		if strings.Contains(doc, "`"+d+"`") {
			continue
		}
		if r, ok := strings.CutPrefix(d, "rx_offload_"); ok && strings.Contains(doc, "`"+r+"`") && strings.Contains(doc, "`rx_offload_<reason>`") {
			continue
		}
		t.Errorf("drop reason %s is not in README.md's drops table", d)
	}
}
