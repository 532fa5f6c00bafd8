package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/vhost"
)

// TestPrintClientPort: a client port says so beside its socket, and while it is not
// connected, how often vhostd tried and why it failed.
func TestPrintClientPort(t *testing.T) {
	var b bytes.Buffer
	printPorts(&b, []control.PortInfo{
		{Name: "vm1", Kind: "vhost-user", State: "connecting", Vhost: vhost.Status{Path: "/run/qemu/vm1.sock", Mode: vhost.ModeClient,
			Attempts: 7, LastAttempt: time.Now().Add(-300 * time.Millisecond), LastError: "connect to /run/qemu/vm1.sock: connection refused"}},
		{Name: "vm2", Kind: "vhost-user", State: "listening", Vhost: vhost.Status{Path: "/run/vhostd/vm2.sock", Mode: vhost.ModeServer}},
	})
	out := b.String()
	for _, want := range []string{"vm1   vhost-user  connecting  -        /run/qemu/vm1.sock (client)  ",
		"vm2   vhost-user  listening   -        /run/vhostd/vm2.sock  ",
		"vm1: connecting to /run/qemu/vm1.sock: 7 attempts, the last 3", "connection refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("printPorts lacks %q:\n%s", want, out)
		}
	}
}
