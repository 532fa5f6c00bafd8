package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/test/testpmd"
)

// TestTestpmdPortSecurity runs DPDK's virtio driver through ports with
// port security and socket permissions: a guest sending from its own
// address (pinned, or locked with mac=learn) is switched as usual; one
// sending from another address has every frame dropped as rx_spoofed,
// and its address never reaches the FDB.
func TestTestpmdPortSecurity(t *testing.T) {
	requirePeer(t, testpmd.DefaultBinary)
	const perPort = 500
	const macC = "02:00:00:00:00:0c"
	for _, spoof := range []bool{false, true} {
		name := "own-addresses"
		if spoof {
			name = "a-spoofs"
		}
		t.Run(name, func(t *testing.T) {
			dir := sockDir(t)
			v := startVhostd(t, dir,
				"--socket-mode", "0660", "--socket-group", "65534",
				"--socket", "a="+filepath.Join(dir, "a.sock")+",mac="+macA+",mode=0600",
				"--socket", "b="+filepath.Join(dir, "b.sock")+",mac=learn")
			for sock, mode := range map[string]uint32{"a.sock": 0o600, "b.sock": 0o660} {
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(dir, sock), &st); err != nil {
					t.Fatal(err)
				}
				if st.Mode&0o777 != mode || st.Gid != 65534 {
					t.Errorf("%s: mode %#o gid %d, want %#o and 65534", sock, st.Mode&0o777, st.Gid, mode)
				}
			}
			aMAC := macA
			if spoof {
				aMAC = macC
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			tp := v.startTestpmd(t, ctx, testpmd.Config{
				Ports: []testpmd.Port{
					{Socket: filepath.Join(dir, "a.sock"), MAC: aMAC},
					{Socket: filepath.Join(dir, "b.sock"), MAC: macB},
				},
				PeerMACs: []string{macB, aMAC},
				TxPkts:   60,
			})
			st, err := tp.SendExact(ctx, perPort, testpmd.SendOptions{})
			if err != nil {
				t.Fatalf("send: %v\nvhostd log:\n%s", err, tail(v.Log(), 3000))
			}
			ports := v.ports(t)
			if p := ports["b"]; p.MAC != "learn" || p.LockedMAC != macB {
				t.Errorf("port b: mac %q locked to %q, want learn and %s", p.MAC, p.LockedMAC, macB)
			}
			if p := ports["a"]; p.LockedMAC != macA {
				t.Errorf("port a: locked to %q, want %s", p.LockedMAC, macA)
			}
			fdb := map[string]string{}
			for _, e := range v.fdb(t) {
				if e.Static {
					fdb[e.MAC] = e.Port
				} else {
					fdb[e.MAC] = "dynamic on " + e.Port
				}
			}
			if fdb[macA] != "a" || fdb[macB] != "b" || len(fdb) != 2 {
				t.Errorf("fdb %v: want %s and %s pinned to a and b, nothing else", fdb, macA, macB)
			}
			if !spoof {
				v.matchTestpmd(t, []string{"a", "b"}, st)
				return
			}
			// b's frames to macC are flooded to a; a's all dropped.
			vs := v.stats(t)
			if s := vs["a"]; s.RxPackets != perPort || s.Drops["rx_spoofed"] != perPort || s.TxPackets != perPort {
				t.Errorf("port a: rx %d tx %d drops %v; want %d, all spoofed, and b's", s.RxPackets, s.TxPackets, s.Drops, perPort)
			}
			if st[1].RxPackets != 0 || st[0].RxPackets != perPort {
				t.Errorf("testpmd received a:%d b:%d; want %d and none", st[0].RxPackets, st[1].RxPackets, perPort)
			}
		})
	}
}

func (v *vhostd) fdb(t *testing.T) []control.FDBEntry {
	t.Helper()
	var fdb []control.FDBEntry
	if err := control.Call(context.Background(), v.Control, "fdb", &fdb); err != nil {
		t.Fatal(err)
	}
	return fdb
}
