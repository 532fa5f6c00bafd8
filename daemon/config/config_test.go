package config

import (
	"os"
	"path/filepath"
	"strconv"
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
		"poller cpus":    func(c *Config) { c.PollerCPUs = "1-x" },
		"cpus count":     func(c *Config) { c.PollerCPUs = "1,2" },
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

// poller_cpus in the file: a list with one CPU per poller loads; the
// errors say which key and what to write.
func TestPollerCPUsKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vhostd.toml")
	os.WriteFile(path, []byte("pollers = 2\npoller_cpus = \"3,1\"\n[[port]]\nname = \"vm1\"\nsocket = \"/tmp/vm1.sock\"\n"), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.PollerCPUs != "3,1" {
		t.Fatalf("poller_cpus = \"3,1\" with 2 pollers: %q, %v", c.PollerCPUs, err)
	}
	for _, bad := range []struct{ cpus, want string }{
		{"3", `poller_cpus = "3" names 1 CPU for 2 pollers: name one CPU per poller, or set pollers = 1`},
		{"1,1", `poller_cpus = "1,1": CPU 1 is named twice`},
		{"2-1", `poller_cpus = "2-1": CPU range "2-1" goes down`},
	} {
		c.PollerCPUs = bad.cpus
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("poller_cpus %q: %v, want %q", bad.cpus, err, bad.want)
		}
	}
}

func TestParseSocketSecurityOptions(t *testing.T) {
	p, err := ParseSocket("vm=/s,mac=02:00:00:00:00:0a,max_macs=16,owner=nobody,group=65534,mode=0660")
	if err != nil {
		t.Fatal(err)
	}
	if p.MAC != "02:00:00:00:00:0a" || p.MaxMACs != 16 || p.Owner != "nobody" || p.Group != "65534" || p.Mode != "0660" {
		t.Fatalf("parsed %+v", p)
	}
	if p, err := ParseSocket("/s,mac=learn"); err != nil || p.MAC != LearnMAC {
		t.Fatalf("mac=learn: %+v, %v", p, err)
	}
	if _, err := ParseSocket("/s,max_macs=many"); err == nil || !strings.Contains(err.Error(), "max_macs") {
		t.Fatalf("bad max_macs: %v", err)
	}
}

func TestLoadSecurity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sec.toml")
	os.WriteFile(path, []byte(`
max_macs     = 64
socket_group = "65534"
socket_mode  = "0660"
[[port]]
name   = "vm1"
socket = "/tmp/vm1.sock"
mac    = "02:00:00:00:00:0a"
owner  = "0"
mode   = "0600"
[[port]]
name     = "vm2"
socket   = "/tmp/vm2.sock"
mac      = "learn"
max_macs = 8
[[port]]
name   = "vm3"
socket = "/tmp/vm3.sock"
`), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := []int{c.MaxMACs(c.Ports[0]), c.MaxMACs(c.Ports[1])}; got[0] != 64 || got[1] != 8 {
		t.Fatalf("max_macs %v, want [64 8]", got)
	}
	p1, err := c.SocketPerm(c.Ports[0])
	if err != nil {
		t.Fatal(err)
	}
	if p1.Mode != 0o600 || !p1.SetUID || p1.UID != 0 || !p1.SetGID || p1.GID != 65534 {
		t.Fatalf("port vm1 perm %+v: want its own mode and owner, the default group", p1)
	}
	p3, _ := c.SocketPerm(c.Ports[2])
	if p3.Mode != 0o660 || p3.SetUID || p3.GID != 65534 {
		t.Fatalf("port vm3 perm %+v: want the defaults", p3)
	}
	d := Default()
	if got := d.MaxMACs(Port{}); got != DefaultMaxMACs {
		t.Fatalf("default max_macs %d", got)
	}
	d.FDBSize = 256
	if got := d.MaxMACs(Port{}); got != 256 {
		t.Fatalf("default max_macs with a small table: %d, want fdb_size", got)
	}

	intMode := filepath.Join(dir, "intmode.toml")
	os.WriteFile(intMode, []byte("socket_mode = 0o660\n"), 0o644)
	if _, err := Load(intMode); err == nil || !strings.Contains(err.Error(), "quoted octal") {
		t.Fatalf("integer mode: %v", err)
	}
}

func TestValidateSecurityErrors(t *testing.T) {
	base := func() Config {
		c := Default()
		c.Ports = []Port{{Name: "vm1", Socket: "/tmp/vm1.sock"}, {Name: "vm2", Socket: "/tmp/vm2.sock"}}
		return c
	}
	for name, tc := range map[string]struct {
		mutate func(*Config)
		want   string // what the error must mention
	}{
		"bad mac":          {func(c *Config) { c.Ports[0].MAC = "02:00:00:00:0a" }, `port "vm1": mac = "02:00:00:00:0a"`},
		"multicast mac":    {func(c *Config) { c.Ports[0].MAC = "01:00:5e:00:00:01" }, "multicast"},
		"zero mac":         {func(c *Config) { c.Ports[0].MAC = "00:00:00:00:00:00" }, "zero"},
		"dup mac":          {func(c *Config) { c.Ports[0].MAC, c.Ports[1].MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0A" }, `port "vm1"'s already`},
		"negative max":     {func(c *Config) { c.Ports[0].MaxMACs = -1 }, `port "vm1": max_macs = -1`},
		"max over fdb":     {func(c *Config) { c.MaxMACsDefault = 9000 }, "max_macs (--max-macs) = 9000: use 1 to fdb_size (8192)"},
		"unknown owner":    {func(c *Config) { c.Ports[1].Owner = "no-such-user-xyz" }, `port "vm2": owner "no-such-user-xyz": no such user`},
		"unknown group":    {func(c *Config) { c.SocketGroup = "no-such-group-xyz" }, `socket_group (--socket-group) "no-such-group-xyz": no such group`},
		"mode not octal":   {func(c *Config) { c.SocketMode = "rw-rw----" }, "not an octal mode"},
		"mode 8":           {func(c *Config) { c.Ports[0].Mode = "0680" }, "not an octal mode"},
		"mode setuid":      {func(c *Config) { c.Ports[0].Mode = "4660" }, "beyond 0777"},
		"mode zero":        {func(c *Config) { c.SocketMode = "0" }, "no one but root"},
		"negative numeric": {func(c *Config) { c.SocketOwner = "-5" }, "numeric ids"},
	} {
		c := base()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", name, err, tc.want)
		}
	}
	c := base()
	c.Ports[0].MAC, c.Ports[1].MAC = LearnMAC, LearnMAC // learn may repeat
	c.SocketOwner, c.SocketGroup, c.SocketMode = "nobody", "nogroup", "0o660"
	if err := c.Validate(); err != nil {
		t.Fatalf("good settings refused: %v", err)
	}
}

// TestClientPort: "client" on --socket and client = true in the file make
// a client port; owner, group and mode are refused with it, by name.
func TestClientPort(t *testing.T) {
	p, err := ParseSocket("vm=/run/qemu/vm.sock,client,queues=2")
	if err != nil || !p.Client || p.Name != "vm" || p.Socket != "/run/qemu/vm.sock" || p.QueuePairs != 2 {
		t.Fatalf("ParseSocket = %+v, %v", p, err)
	}
	if p, err := ParseSocket("/s"); err != nil || p.Client {
		t.Fatalf("a port without client: %+v, %v", p, err)
	}
	if _, err := ParseSocket("/s,client=yes"); err == nil {
		t.Error("client=yes accepted: client takes no value")
	}
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte(`
control = "/tmp/c.sock"
socket_mode = "0660"
[[port]]
name = "vm1"
socket = "/tmp/vm1.sock"
client = true
[[port]]
name = "vm2"
socket = "/tmp/vm2.sock"
`), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// The defaults for all sockets apply to the server ports only.
	if err := c.Validate(); err != nil {
		t.Fatalf("client port with a default socket_mode: %v", err)
	}
	if !c.Ports[0].Client || c.Ports[1].Client {
		t.Fatalf("loaded %+v", c.Ports)
	}
	for _, set := range []func(*Port){
		func(p *Port) { p.Owner = "root" },
		func(p *Port) { p.Group = "0" },
		func(p *Port) { p.Mode = "0600" },
	} {
		c, _ := Load(path)
		set(&c.Ports[0])
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), `port "vm1"`) || !strings.Contains(err.Error(), "client") {
			t.Errorf("client port with a permission setting: %v", err)
		}
	}
}

func TestMetricsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vhostd.toml")
	if err := os.WriteFile(path, []byte("metrics = \"127.0.0.1:9480\"\n[[port]]\nname = \"a\"\nsocket = \"/run/a.sock\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics != "127.0.0.1:9480" {
		t.Fatalf("metrics %q", c.Metrics)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if Default().Metrics != "" {
		t.Error("metrics on by default")
	}
	for _, bad := range []string{":x", "127.0.0.1", "127.0.0.1:65536", "bad host:1"} {
		c.Metrics = bad
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "metrics address "+strconv.Quote(bad)) {
			t.Errorf("metrics = %q: %v", bad, err)
		}
	}
}
