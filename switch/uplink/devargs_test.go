package uplink

import (
	"strings"
	"testing"
)

func TestParseDevargs(t *testing.T) {
	d, err := ParseDevargs("net_tap0,iface=vd0,persist")
	if err != nil || d.Device != "net_tap0" || d.Args["iface"] != "vd0" || d.Driver() != "net_tap" {
		t.Fatalf("ParseDevargs = %+v, %v", d, err)
	}
	if _, ok := d.Args["persist"]; !ok {
		t.Errorf("flag option lost: %+v", d.Args)
	}
	if d, _ := ParseDevargs("0000:01:00.0"); d.Driver() != "" {
		t.Errorf("PCI device has driver %q", d.Driver())
	}
	for in, want := range map[string]string{
		"":                  "empty devargs",
		"net_tap0, iface=x": "whitespace",
		"iface=x":           "device name comes first",
		"net_tap0,,x=y":     "empty option",
	} {
		if _, err := ParseDevargs(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDevargs(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestCheckInterfaces(t *testing.T) {
	for in, want := range map[string]string{
		"net_af_packet0,iface=vdnosuch9":          `no network interface "vdnosuch9"`,
		"net_tap0,iface=lo":                       `a device interface named "lo" exists already`,
		"net_tap0,iface=waytoolonganinterfacenam": "1 to 15 characters",
	} {
		d, err := ParseDevargs(in)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckInterfaces(d); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckInterfaces(%q) = %v, want %q", in, err, want)
		}
	}
	for _, ok := range []string{"net_af_packet0,iface=lo", "net_tap0,iface=vdfree9", "net_null0", "0000:01:00.0", "net_vhost0,iface=/a/long/path/to/a/vhost-user.sock"} {
		d, _ := ParseDevargs(ok)
		if err := CheckInterfaces(d); err != nil {
			t.Errorf("CheckInterfaces(%q) = %v", ok, err)
		}
	}
}
