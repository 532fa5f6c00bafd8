package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSocket(t *testing.T) {
	cases := []struct {
		in   string
		want Port
	}{
		{"/run/vm1.sock", Port{Name: "vm1", Socket: "/run/vm1.sock"}},
		{"web=/run/a.sock", Port{Name: "web", Socket: "/run/a.sock"}},
		{"x=/s,disable=mrg_rxbuf+event_idx,queues=2", Port{Name: "x", Socket: "/s", DisableFeatures: []string{"mrg_rxbuf", "event_idx"}, QueuePairs: 2}},
		{"/dir=odd/vm.sock", Port{Name: "vm", Socket: "/dir=odd/vm.sock"}},
	}
	for _, c := range cases {
		got, err := ParseSocket(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if got.Name != c.want.Name || got.Socket != c.want.Socket || got.QueuePairs != c.want.QueuePairs ||
			strings.Join(got.DisableFeatures, "+") != strings.Join(c.want.DisableFeatures, "+") {
			t.Errorf("%q = %+v, want %+v", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"vm=", "", "/s,bogus=1", "/s,queues=two"} {
		if _, err := ParseSocket(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLoadAndValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte(`
control = "/tmp/c.sock"
fdb_age = "10s"
[[port]]
name = "vm1"
socket = "/tmp/vm1.sock"
disable_features = ["mrg_rxbuf"]
`), 0o644)
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.FDBAge.Duration != 10*time.Second || c.Pollers != 1 || len(c.Ports) != 1 || c.Ports[0].DisableFeatures[0] != "mrg_rxbuf" {
		t.Fatalf("loaded %+v", c)
	}

	typo := filepath.Join(dir, "typo.toml")
	os.WriteFile(typo, []byte("pollerz = 2\n"), 0o644)
	if _, err := Load(typo); err == nil || !strings.Contains(err.Error(), "pollerz") {
		t.Fatalf("unknown key: %v", err)
	}
	badAge := filepath.Join(dir, "age.toml")
	os.WriteFile(badAge, []byte("fdb_age = \"soon\"\n"), 0o644)
	if _, err := Load(badAge); err == nil {
		t.Fatal("bad duration accepted")
	}

	for name, mutate := range map[string]func(*Config){
		"no ports":       func(c *Config) { c.Ports = nil },
		"dup name":       func(c *Config) { c.Ports = append(c.Ports, Port{Name: "vm1", Socket: "/tmp/other.sock"}) },
		"dup socket":     func(c *Config) { c.Ports = append(c.Ports, Port{Name: "vm2", Socket: "/tmp/vm1.sock"}) },
		"bad feature":    func(c *Config) { c.Ports[0].DisableFeatures = []string{"tso"} },
		"bad level":      func(c *Config) { c.LogLevel = "loud" },
		"zero pollers":   func(c *Config) { c.Pollers = 0 },
		"control clash":  func(c *Config) { c.Control = "/tmp/vm1.sock" },
		"tiny fdb":       func(c *Config) { c.FDBSize = 1 },
		"no socket path": func(c *Config) { c.Ports[0].Socket = "" },
	} {
		c, _ := Load(good)
		mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.ContainsAny(err.Error(), "\"=:") {
			t.Errorf("%s: error %q does not say what to fix", name, err)
		}
	}
}
