package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseUplink(t *testing.T) {
	cases := []struct{ in, name, devargs string }{
		{"net_tap0,iface=vhostd0", "uplink", "net_tap0,iface=vhostd0"},
		{"wan=net_tap0,iface=vhostd0", "wan", "net_tap0,iface=vhostd0"},
		{"0000:01:00.0", "uplink", "0000:01:00.0"},
		{"nic=0000:01:00.0,rxq=1", "nic", "0000:01:00.0,rxq=1"},
		{"net_null0", "uplink", "net_null0"},
	}
	for _, c := range cases {
		name, devargs, err := ParseUplink(c.in)
		if err != nil || name != c.name || devargs != c.devargs {
			t.Errorf("ParseUplink(%q) = %q, %q, %v; want %q, %q", c.in, name, devargs, err, c.name, c.devargs)
		}
	}
	for in, want := range map[string]string{
		"=net_tap0":         "empty port name",
		"wan=":              "no DPDK device",
		"net_tap0, iface=x": "whitespace",
	} {
		if _, _, err := ParseUplink(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseUplink(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestValidateUplink(t *testing.T) {
	base := func() Config {
		c := Default()
		c.Ports = []Port{{Name: "vm1", Socket: "/tmp/vm1.sock"}}
		c.Uplink = "net_tap0,iface=vd0"
		return c
	}
	c := base()
	c.UplinkMTU, c.EAL = 9000, "-m 512 --log-level=8"
	if err := c.Validate(); err != nil {
		t.Fatalf("good uplink config: %v", err)
	}
	if a := c.EALArgs(); len(a) != 3 || a[1] != "512" {
		t.Errorf("EALArgs = %q", a)
	}
	for want, mutate := range map[string]func(*Config){
		"eal arguments given without an uplink": func(c *Config) { c.Uplink, c.EAL = "", "-m 512" },
		"uplink_mtu given without an uplink":    func(c *Config) { c.Uplink, c.UplinkMTU = "", 9000 },
		"uplink_mtu = 20000: use 68 to 9600":    func(c *Config) { c.UplinkMTU = 20000 },
		`uplink port name "vm1" is used`:        func(c *Config) { c.Uplink = "vm1=net_null0" },
		"--vdev is not needed":                  func(c *Config) { c.EAL = "--vdev net_null0" },
	} {
		c := base()
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate = %v", want, err)
		}
	}
}

func TestLoadUplinkKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "up.toml")
	os.WriteFile(path, []byte(`
uplink = "wan=net_tap0,iface=vd0"
eal = "-m 512"
uplink_mtu = 9000
[[port]]
name = "vm1"
socket = "/tmp/vm1.sock"
`), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Uplink != "wan=net_tap0,iface=vd0" || c.EAL != "-m 512" || c.UplinkMTU != 9000 {
		t.Fatalf("loaded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
