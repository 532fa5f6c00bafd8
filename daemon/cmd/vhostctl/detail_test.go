package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// ports --detail against a running vhostd: a frontend that starts a ring
// without SET_FEATURES gets a report with its features, the ring's setup
// and the violation with its section.
func TestPortsDetail(t *testing.T) {
	_, cfg := startDaemon(t)
	f, err := vt.Dial(filepath.Join(filepath.Dir(cfg.Control), "a.sock"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.MapMemory(32<<20, 0x100000, 0x7f0000000000); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(false); err != nil {
		t.Fatal(err)
	}
	r, err := f.SetupRing(0, 256, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := f.GetU64(vt.GetFeatures); err != nil { // a barrier
		t.Fatal(err)
	}
	out, err := vhostctl(t, "--control", cfg.Control, "ports", "--detail", "a")
	if err != nil {
		t.Fatalf("ports --detail: %v\n%s", err, out)
	}
	for _, want := range []string{
		"port a (vhost-user): running",
		"  offered   csum guest_csum mtu guest_tso4 guest_tso6 guest_ecn host_tso4 host_tso6 host_ecn mrg_rxbuf guest_announce",
		"  acked     (no SET_FEATURES yet)",
		"memory    1 regions",
		"header    10 bytes (legacy virtio_net_hdr, no num_buffers)",
		"RING  SIZE    STATE     KICK     CALL            DESC           AVAIL            USED  LOG",
		"0      256  running  eventfd  eventfd  0x7f0000001000  0x7f0000020000  0x7f0000030000  -",
		"violations: 1",
		"SET_VRING_KICK: ring 0 started before any SET_FEATURES: features 0 assumed (10-byte header)",
		"breaks vhost-user.rst, Ring states",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if out, err := vhostctl(t, "--control", cfg.Control, "ports", "--detail", "nope"); err == nil || !strings.Contains(err.Error(), `no port "nope" (ports: a)`) {
		t.Errorf("unknown port: %v\n%s", err, out)
	}
	if out, err := vhostctl(t, "--control", cfg.Control, "ports", "--detail", "a", "--json"); err != nil || !strings.Contains(out, `"violations_seen": 1`) {
		t.Errorf("--json: %v\n%s", err, out)
	}
}
