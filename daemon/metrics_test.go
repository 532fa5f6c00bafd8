package daemon

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/daemon/config"
)

// TestMetricsListener: with Metrics set, /metrics and /healthz answer
// once Start returns, an address in use fails Start with nothing left
// behind, and Stop closes the listener.
func TestMetricsListener(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.Metrics = "127.0.0.1:0"
	cfg.Ports = []config.Port{{Name: "vm1", Socket: filepath.Join(dir, "vm1.sock")}}
	d, err := Start(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	addr := d.metrics.Addr().String()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `vhostd_port_rx_packets_total{port="vm1"} 0`) ||
		!strings.Contains(string(b), `vhostd_port_state{port="vm1",state="listening"} 1`) {
		t.Errorf("/metrics: %s\n%s", resp.Status, b)
	}

	// The address in use: Start fails and removes its sockets.
	cfg2 := cfg
	cfg2.Control = filepath.Join(dir, "control2.sock")
	cfg2.Ports = []config.Port{{Name: "vm2", Socket: filepath.Join(dir, "vm2.sock")}}
	cfg2.Metrics = addr
	if d2, err := Start(cfg2, quietLog()); err == nil {
		d2.Stop()
		t.Error("two daemons on one metrics address")
	} else if !strings.Contains(err.Error(), "metrics address") {
		t.Errorf("address in use: %v", err)
	}
	for _, p := range []string{cfg2.Control, cfg2.Ports[0].Socket} {
		if _, err := net.Dial("unix", p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}

	d.Stop()
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("/healthz answers after Stop")
	}
}

// TestMetricsAddressChecked: a bad address fails Start with the address
// named.
func TestMetricsAddressChecked(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Control = filepath.Join(dir, "control.sock")
	cfg.Metrics = ":x"
	cfg.Ports = []config.Port{{Name: "vm1", Socket: filepath.Join(dir, "vm1.sock")}}
	if d, err := Start(cfg, quietLog()); err == nil {
		d.Stop()
		t.Fatal("started with metrics address :x")
	} else if !strings.Contains(err.Error(), `metrics address ":x"`) {
		t.Errorf("error %v", err)
	}
}
