package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/test/testpmd"
)

// freeLoopbackAddr returns a loopback address with a TCP port that was
// free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// scrapeMetrics gets and parses vhostd's /metrics.
func scrapeMetrics(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue returns the value of family name's series whose labels
// include want, and whether there is one.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := 0
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				match++
			}
		}
		if match != len(want) {
			continue
		}
		if c := m.GetCounter(); c != nil {
			return c.GetValue(), true
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

// TestMetrics runs vhostd with --metrics on a loopback port and DPDK's
// virtio driver on two ports, passes a known number of frames each way,
// and checks that /metrics, parsed as Prometheus text, counts what
// testpmd and vhostctl stats count, and that /healthz answers.
func TestMetrics(t *testing.T) {
	requirePeer(t, testpmd.DefaultBinary)
	const perPort = 3000
	dir := sockDir(t)
	addr := freeLoopbackAddr(t)
	v := startVhostd(t, dir, "--metrics", addr,
		"--socket", "a="+filepath.Join(dir, "a.sock"), "--socket", "b="+filepath.Join(dir, "b.sock"))

	// Up as soon as the control socket is: bound before vhostd runs.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v\n%s", err, tail(v.Log(), 2000))
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("/healthz: %s %q", resp.Status, body)
	}
	before := scrapeMetrics(t, addr)
	for _, name := range []string{"a", "b"} {
		if got, ok := metricValue(before, "vhostd_port_state", map[string]string{"port": name, "state": "listening"}); !ok || got != 1 {
			t.Errorf("port %s before testpmd: state listening = %v (%v)", name, got, ok)
		}
		if got, _ := metricValue(before, "vhostd_port_connected", map[string]string{"port": name}); got != 0 {
			t.Errorf("port %s connected before testpmd", name)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp := v.startTestpmd(t, ctx, testpmd.Config{
		Ports: []testpmd.Port{
			{Socket: filepath.Join(dir, "a.sock"), MAC: macA},
			{Socket: filepath.Join(dir, "b.sock"), MAC: macB},
		},
		PeerMACs: []string{macB, macA},
		TxPkts:   60,
	})
	st, err := tp.SendExact(ctx, perPort, testpmd.SendOptions{})
	if err != nil {
		t.Fatalf("send: %v\nvhostd log:\n%s", err, tail(v.Log(), 3000))
	}
	for i, s := range st {
		if s.TxPackets != perPort || s.RxPackets != perPort {
			t.Fatalf("testpmd port %d: tx %d rx %d, want %d each way", i, s.TxPackets, s.RxPackets, perPort)
		}
	}
	vs := v.matchTestpmd(t, []string{"a", "b"}, st)
	fams := scrapeMetrics(t, addr)
	for i, name := range []string{"a", "b"} {
		port := map[string]string{"port": name}
		for _, c := range []struct {
			metric      string
			want, other uint64
		}{
			// vhostd rx is what testpmd sent, tx what it received.
			{"vhostd_port_rx_packets_total", st[i].TxPackets, vs[name].RxPackets},
			{"vhostd_port_rx_bytes_total", st[i].TxBytes, vs[name].RxBytes},
			{"vhostd_port_tx_packets_total", st[i].RxPackets, vs[name].TxPackets},
			{"vhostd_port_tx_bytes_total", st[i].RxBytes, vs[name].TxBytes},
		} {
			got, ok := metricValue(fams, c.metric, port)
			if !ok || got != float64(c.want) || got != float64(c.other) {
				t.Errorf("%s{port=%q} = %v (%v); testpmd %d, vhostctl stats %d", c.metric, name, got, ok, c.want, c.other)
			}
		}
		for _, reason := range vswitch.DropNames {
			if got, ok := metricValue(fams, "vhostd_port_drops_total", map[string]string{"port": name, "reason": reason}); !ok || got != 0 {
				t.Errorf("vhostd_port_drops_total{port=%q,reason=%q} = %v (%v), want 0", name, reason, got, ok)
			}
		}
		for _, c := range []struct {
			metric string
			labels map[string]string
			want   float64
		}{
			{"vhostd_port_connected", port, 1},
			{"vhostd_port_state", map[string]string{"port": name, "state": "running"}, 1},
			{"vhostd_port_state", map[string]string{"port": name, "state": "listening"}, 0},
			{"vhostd_port_rings_running", port, 2},
			{"vhostd_port_fdb_entries", port, 1},
			{"vhostd_port_fdb_learn_limited_total", port, 0},
		} {
			if got, ok := metricValue(fams, c.metric, c.labels); !ok || got != c.want {
				t.Errorf("%s%v = %v (%v), want %v", c.metric, c.labels, got, ok, c.want)
			}
		}
	}
	if got, _ := metricValue(fams, "vhostd_fdb_entries", nil); got != 2 {
		t.Errorf("vhostd_fdb_entries = %v, want 2 (testpmd's two addresses)", got)
	}
	checkPollerMetrics(t, fams, 2*perPort, time.Since(v.Started), "a", "b")
	for i, name := range []string{"a", "b"} {
		// Per queue: one lane and one receive queue each way, adding up
		// to the port's counters.
		var rx, tx float64
		for _, m := range fams["vhostd_queue_packets_total"].GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["port"] == name && l["dir"] == "rx" {
				rx += m.GetCounter().GetValue()
			} else if l["port"] == name && l["dir"] == "tx" {
				tx += m.GetCounter().GetValue()
			}
		}
		if rx != float64(st[i].TxPackets) || tx != float64(st[i].RxPackets) {
			t.Errorf("port %s per queue: rx %v tx %v; testpmd sent %d, received %d", name, rx, tx, st[i].TxPackets, st[i].RxPackets)
		}
		port := map[string]string{"port": name}
		if got, _ := metricValue(fams, "vhostd_port_connections_total", port); got != 1 {
			t.Errorf("vhostd_port_connections_total{port=%q} = %v, want 1", name, got)
		}
		if got, _ := metricValue(fams, "vhostd_port_negotiations_total", port); got < 1 {
			t.Errorf("vhostd_port_negotiations_total{port=%q} = %v, want at least 1", name, got)
		}
	}
	if got, _ := metricValue(fams, "vhostd_fdb_learned_total", nil); got != 2 {
		t.Errorf("vhostd_fdb_learned_total = %v, want 2 (testpmd's two addresses)", got)
	}
	if got, _ := metricValue(fams, "vhostd_fdb_capacity", nil); got < 1024 {
		t.Errorf("vhostd_fdb_capacity = %v", got)
	}
	if t.Failed() {
		var b strings.Builder
		for name, f := range fams {
			if strings.HasPrefix(name, "vhostd_") {
				fmt.Fprintln(&b, f.String())
			}
		}
		t.Logf("scrape:\n%s", b.String())
	}
	tp.Close()
	v.stop()
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("/healthz answers after vhostd stopped")
	}
}

// checkPollerMetrics checks the pollers' series of a scrape: together they
// took frames frames; each one's busy plus idle time is at most how long
// vhostd has run; some were busy; every port is on a poller.
func checkPollerMetrics(t *testing.T, fams map[string]*dto.MetricFamily, frames uint64, ran time.Duration, ports ...string) {
	t.Helper()
	sum := func(name string) (total float64, per map[string]float64) {
		per = map[string]float64{}
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "poller" {
					per[l.GetValue()] = m.GetCounter().GetValue()
					total += m.GetCounter().GetValue()
				}
			}
		}
		return total, per
	}
	took, _ := sum("vhostd_poller_frames_total")
	busy, busyPer := sum("vhostd_poller_busy_seconds_total")
	_, idlePer := sum("vhostd_poller_idle_seconds_total")
	cycles, _ := sum("vhostd_poller_busy_cycles_total")
	if took != float64(frames) {
		t.Errorf("vhostd_poller_frames_total sums to %v, want %d (every frame received)", took, frames)
	}
	if busy <= 0 || cycles <= 0 || len(busyPer) == 0 {
		t.Errorf("pollers busy %vs, %v cycles, over %d pollers: no work seen", busy, cycles, len(busyPer))
	}
	for id, b := range busyPer {
		if life := b + idlePer[id]; life > ran.Seconds()*1.05 || life <= 0 {
			t.Errorf("poller %s: busy %.3fs + idle %.3fs, vhostd has run %.3fs", id, b, idlePer[id], ran.Seconds())
		}
	}
	if hz, ok := metricValue(fams, "vhostd_tsc_hz", nil); !ok || hz < 1e8 {
		t.Errorf("vhostd_tsc_hz = %v (%v)", hz, ok)
	}
	on := map[string]bool{}
	for _, m := range fams["vhostd_poller_ports"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "port" && m.GetGauge().GetValue() == 1 {
				on[l.GetValue()] = true
			}
		}
	}
	for _, p := range ports {
		if !on[p] {
			t.Errorf("port %s on no poller in vhostd_poller_ports", p)
		}
	}
	t.Logf("pollers: %.0f frames, busy %.4fs, %.0f cycles/frame", took, busy, cycles/took)
}
