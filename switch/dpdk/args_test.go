package dpdk

import (
	"reflect"
	"strings"
	"testing"
)

func TestEALArgsDefaults(t *testing.T) {
	got := EALArgs(nil, ArgOptions{Prefix: "p1", Core: 1})
	want := []string{"--no-huge", "-m", "256", "--no-shconf", "-l", "1", "--file-prefix=p1", "--no-telemetry", "--no-pci"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("EALArgs = %q, want %q", got, want)
	}
}

func TestEALArgsUserReplacesDefaults(t *testing.T) {
	cases := []struct {
		extra   []string
		absent  []string // defaults that must be gone
		present []string
	}{
		{[]string{"-m", "512"}, []string{"256"}, []string{"--no-huge", "512"}},
		{[]string{"-m512"}, []string{"256"}, []string{"-m512"}},
		{[]string{"--socket-mem=1024"}, []string{"--no-huge", "256"}, []string{"--socket-mem=1024"}},
		{[]string{"--in-memory"}, []string{"--no-huge", "--no-shconf"}, nil},
		{[]string{"--lcores", "0@1"}, []string{"-l"}, []string{"--lcores"}},
		{[]string{"-c", "0x2"}, []string{"-l"}, nil},
		{[]string{"--file-prefix", "mine"}, []string{"--file-prefix=p"}, []string{"mine"}},
		{[]string{"-a", "0000:01:00.0"}, []string{"--no-pci"}, nil},
		{[]string{"--telemetry"}, []string{"--no-telemetry"}, nil},
		{[]string{"--log-level=8"}, nil, []string{"--no-huge", "--no-pci", "--log-level=8"}},
	}
	for _, c := range cases {
		got := EALArgs(c.extra, ArgOptions{Prefix: "p", Core: 0})
		joined := " " + strings.Join(got, " ") + " "
		for _, a := range c.absent {
			if strings.Contains(joined, " "+a+" ") {
				t.Errorf("EALArgs(%q) = %q still holds %q", c.extra, got, a)
			}
		}
		for _, a := range c.present {
			if !strings.Contains(joined, " "+a+" ") {
				t.Errorf("EALArgs(%q) = %q lacks %q", c.extra, got, a)
			}
		}
	}
}

func TestEALArgsPCI(t *testing.T) {
	got := EALArgs(nil, ArgOptions{Prefix: "p", Core: 0, PCI: []string{"0000:03:00.0,rxq=2"}})
	joined := strings.Join(got, " ")
	if strings.Contains(joined, "--no-pci") || !strings.Contains(joined, "-a 0000:03:00.0,rxq=2") {
		t.Fatalf("EALArgs with a PCI device = %q", got)
	}
}

func TestIsPCI(t *testing.T) {
	for s, want := range map[string]bool{
		"0000:01:00.0": true, "01:00.1": true, "0000:af:00.7,rxq=4": true,
		"net_tap0,iface=x": false, "net_null0": false, "01:00": false, "": false,
	} {
		if IsPCI(s) != want {
			t.Errorf("IsPCI(%q) = %v", s, !want)
		}
	}
}

func TestFilePrefix(t *testing.T) {
	if p := FilePrefix([]string{"-l", "0", "--file-prefix=a"}); p != "a" {
		t.Errorf("FilePrefix = %q", p)
	}
	if p := FilePrefix([]string{"--file-prefix", "b"}); p != "b" {
		t.Errorf("FilePrefix = %q", p)
	}
	if p := FilePrefix([]string{"--no-huge"}); p != "" {
		t.Errorf("FilePrefix = %q", p)
	}
}
