package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
)

func TestPrintPortSecurity(t *testing.T) {
	var b bytes.Buffer
	printPorts(&b, []control.PortInfo{
		{Name: "pinned", Kind: "vhost-user", MAC: "02:00:00:00:00:0a", LockedMAC: "02:00:00:00:00:0a", MaxMACs: 1024},
		{Name: "learner", Kind: "vhost-user", MAC: "learn", LockedMAC: "02:00:00:00:00:0b", LearnedMACs: 3, MaxMACs: 16},
		{Name: "waiting", Kind: "vhost-user", MAC: "learn", MaxMACs: 16},
		{Name: "open", Kind: "vhost-user", MaxMACs: 1024},
	})
	out := b.String()
	want := map[string]string{"pinned": "02:00:00:00:00:0a 0/1024", "learner": "learn:02:00:00:00:00:0b 3/16", "waiting": "learn:- 0/16", "open": "- 0/1024"}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || want[f[0]] == "" {
			continue
		}
		if got := strings.Join(f[len(f)-2:], " "); got != want[f[0]] {
			t.Errorf("port %s: MAC and MACS %q, want %q", f[0], got, want[f[0]])
		}
		delete(want, f[0])
	}
	if len(want) > 0 || !strings.Contains(out, "MAC  ") {
		t.Errorf("printPorts lacks %v:\n%s", want, out)
	}

	b.Reset()
	printFDB(&b, []control.FDBEntry{
		{MAC: "02:00:00:00:00:0a", Port: "pinned", Static: true},
		{MAC: "02:00:00:00:00:0c", Port: "open", Age: 3 * time.Second},
	})
	if out := b.String(); !strings.Contains(out, "02:00:00:00:00:0a  pinned  static") || !strings.Contains(out, "02:00:00:00:00:0c  open    3s") {
		t.Errorf("printFDB:\n%s", out)
	}

	b.Reset()
	printStats(&b, []control.PortStats{{Name: "open", Snapshot: vswitch.Snapshot{
		Drops: map[string]uint64{"rx_spoofed": 4}, FDBLearnLimited: 9, FDBMovesRefused: 2}}})
	out = b.String()
	for _, want := range []string{"open drops: rx_spoofed=4", "fdb_moves_refused=2 fdb_learn_limited=9 fdb_full=0"} {
		if !strings.Contains(out, want) {
			t.Errorf("printStats lacks %q:\n%s", want, out)
		}
	}
}
