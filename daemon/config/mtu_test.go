package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMTUConfig: mtu per port in the file and on --socket, with the
// global default for ports that set none.
func TestMTUConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mtu.toml")
	os.WriteFile(path, []byte(`
mtu = 1500
[[port]]
name   = "vm1"
socket = "/tmp/vm1.sock"
mtu    = 9000
[[port]]
name   = "vm2"
socket = "/tmp/vm2.sock"
`), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if a, b := c.MTU(c.Ports[0]), c.MTU(c.Ports[1]); a != 9000 || b != 1500 {
		t.Fatalf("mtu %d and %d, want 9000 and the default 1500", a, b)
	}
	if d := Default(); d.MTU(Port{}) != 0 {
		t.Fatalf("mtu %d without any setting, want 0 (none)", d.MTU(Port{}))
	}
	p, err := ParseSocket("vm=/s,mtu=1400")
	if err != nil || p.MTU != 1400 {
		t.Fatalf("--socket mtu=1400: %+v, %v", p, err)
	}
	if _, err := ParseSocket("vm=/s,mtu=big"); err == nil || !strings.Contains(err.Error(), `mtu="big" is not a number (use 68 to 65535)`) {
		t.Fatalf("--socket mtu=big: %v", err)
	}
}

// TestMTUValidate: an MTU outside 68..65535 is refused, naming the port
// (or the global setting) and the range to use.
func TestMTUValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*Config)
		want   string
	}{
		"too small":  {func(c *Config) { c.Ports[0].MTU = 67 }, `port "vm1": mtu 67 is out of range: use 68 to 65535`},
		"too big":    {func(c *Config) { c.Ports[0].MTU = 65536 }, `port "vm1": mtu 65536 is out of range: use 68 to 65535`},
		"negative":   {func(c *Config) { c.Ports[0].MTU = -1 }, `port "vm1": mtu -1 is out of range`},
		"global bad": {func(c *Config) { c.MTUDefault = 10 }, "default mtu 10 is out of range: use 68 to 65535 (1500 is Ethernet's usual) (the global mtu setting, --mtu)"},
	} {
		c := Default()
		c.Ports = []Port{{Name: "vm1", Socket: "/tmp/vm1.sock"}}
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
	c := Default()
	c.Ports = []Port{{Name: "vm1", Socket: "/tmp/vm1.sock", MTU: 68}, {Name: "vm2", Socket: "/tmp/vm2.sock", MTU: 65535}}
	if err := c.Validate(); err != nil {
		t.Fatalf("bounds refused: %v", err)
	}
}
