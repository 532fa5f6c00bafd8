package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
)

// dialQMP connects to a QMP socket that QEMU may not have created yet.
func dialQMP(t *testing.T, ctx context.Context, path string) *qemu.QMP {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := qemu.DialQMP(ctx, path)
		if err == nil {
			t.Cleanup(func() { q.Close() })
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP %s: %v", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestQEMUMigration migrates a guest between two vhostd ports, there and
// back, with QEMU's own live migration (same command line with -incoming
// on the destination), while a second guest pings it five times a second:
// each migration completes, at most one ping is lost beyond those sent
// while QEMU had the guest paused (its reported downtime), the migrated guest
// runs on the destination QEMU, and vhostd's FDB has its MAC on the
// destination port. Before vhostd offered VHOST_F_LOG_ALL, QEMU refused:
// "Migration disabled: vhost lacks VHOST_F_LOG_ALL feature".
func TestQEMUMigration(t *testing.T) { qemuMigration(t, "") }

// TestQEMUMigrationPacked is TestQEMUMigration with packed virtqueues
// (packed=on on every guest's virtio-net device): the destination resumes
// each ring from the positions and wrap counters GET_VRING_BASE gave the
// source's QEMU, and the dirty log covers the packed rings.
func TestQEMUMigrationPacked(t *testing.T) { qemuMigration(t, "packed=on") }

// qemuMigration runs TestQEMUMigration with deviceExtra on every guest's
// virtio-net device.
func qemuMigration(t *testing.T, deviceExtra string) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	sock := func(name string) string { return filepath.Join(dir, name+".sock") }
	v := startVhostd(t, dir, "--socket", "src="+sock("src"), "--socket", "dst="+sock("dst"), "--socket", "peer="+sock("peer"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	mover := vm{"vm1", "10.9.0.1", "52:54:00:00:00:01", sock("src")}
	peer := vm{"vm2", "10.9.0.2", "52:54:00:00:00:02", sock("peer")}
	cfg := mover.config(t, kernel, initrd)
	cfg.QMPSocket = filepath.Join(dir, "q0.qmp")
	cfg.NICs[0].DeviceExtra = deviceExtra
	pcfg := peer.config(t, kernel, initrd)
	pcfg.NICs[0].DeviceExtra = deviceExtra
	guests := startGuests(t, ctx, cfg, pcfg)
	here, pg := guests[0], guests[1]
	q := dialQMP(t, ctx, cfg.QMPSocket) // QEMU serves one QMP client at a time: keep it
	warmUp(t, ctx, pg, mover.ip)

	for round, port := range []string{"dst", "src"} {
		t.Logf("round %d: migrating %s to port %s", round+1, mover.name, port)
		next := vm{fmt.Sprintf("%s-%d", mover.name, round+1), mover.ip, mover.mac, sock(port)}
		ncfg := next.config(t, kernel, initrd)
		ncfg.QMPSocket = filepath.Join(dir, fmt.Sprintf("q%d.qmp", round+1))
		ncfg.NICs[0].DeviceExtra = deviceExtra
		uri := "unix:" + filepath.Join(dir, fmt.Sprintf("mig%d", round+1))
		there, err := qemu.StartIncoming(ncfg, uri)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { there.Kill() })
		// The destination serves QMP once its -incoming listener is up.
		var st struct {
			Status string `json:"status"`
		}
		nq := dialQMP(t, ctx, ncfg.QMPSocket)
		if err := nq.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != "inmigrate" {
			t.Fatalf("destination QEMU: status %q, %v; want inmigrate", st.Status, err)
		}

		// Pings every 0.2 s for 16 s; the migration starts 2 s in.
		const pings = 80
		type result struct {
			out string
			err error
		}
		pinged := make(chan result, 1)
		go func() {
			out, _, err := pg.Run(ctx, fmt.Sprintf("ping -i 0.2 -c %d -W 1 %s", pings, mover.ip))
			pinged <- result{out, err}
		}()
		time.Sleep(2 * time.Second)
		began := time.Now()
		info, err := qemu.Migrate(ctx, q, uri, 50*time.Millisecond)
		took := time.Since(began)
		if err != nil {
			t.Fatalf("round %d: %v\nsource stderr: %s\ndestination stderr: %s", round+1, err, here.Stderr(), there.Stderr())
		}
		r := <-pinged
		if r.err != nil {
			t.Fatalf("round %d: ping: %v", round+1, r.err)
		}
		m := pingStats.FindStringSubmatch(r.out)
		if m == nil {
			t.Fatalf("round %d: no ping statistics in:\n%s", round+1, r.out)
		}
		sent, _ := strconv.Atoi(m[1])
		got, _ := strconv.Atoi(m[2])
		t.Logf("round %d: migration %s in %v (QEMU: total %d ms, downtime %d ms, setup %d ms, %d MiB sent, %d dirty syncs); pings %d sent, %d answered",
			round+1, info.Status, took.Round(time.Millisecond), info.TotalTime, info.Downtime, info.SetupTime,
			info.RAM.Transferred>>20, info.RAM.Iterations, sent, got)
		if took > time.Duration(pings)*200*time.Millisecond-2*time.Second {
			t.Errorf("round %d: the migration outlasted the pings: their loss says nothing", round+1)
		}
		// The guest announces itself at its new place (GUEST_ANNOUNCE):
		// the FDB moves its MAC at once, and at most one ping is lost
		// to the move (measured: 1 of 80 each way). Without the announce
		// the pings of the next seconds went to the old port (6-44 of 80
		// lost). Pings sent while QEMU has the guest stopped cannot be
		// answered by anyone: under TCG QEMU's downtime ranges 5-380 ms
		// though 50 ms is asked for, so each 200 ms of it may cost one
		// more.
		allowed := 1 + int((info.Downtime+199)/200) // Downtime is in ms
		if sent-got > allowed {
			t.Errorf("round %d: %d of %d pings lost across the migration, want at most %d (1, plus 1 per 200 ms of QEMU's %d ms downtime):\n%s",
				round+1, sent-got, sent, allowed, info.Downtime, r.out)
		}
		for seq := pings - 10; seq < pings; seq++ {
			if !strings.Contains(r.out, fmt.Sprintf("seq=%d ", seq)) {
				t.Errorf("round %d: ping seq=%d unanswered: the guest is not reachable at its new port:\n%s", round+1, seq, r.out)
				break
			}
		}

		// The guest runs on the destination now, and answers there.
		if out, code, err := there.Run(ctx, "echo migrated"); err != nil || code != 0 {
			t.Fatalf("round %d: command on the destination: %q %d %v", round+1, out, code, err)
		}
		ping(t, ctx, pg, peer.name, mover.ip, 56, 3)
		found := false
		for _, e := range v.fdb(t) {
			if e.MAC == mover.mac {
				found = true
				if e.Port != port {
					t.Errorf("round %d: FDB has %s on port %s, want %s", round+1, e.MAC, e.Port, port)
				}
			}
		}
		if !found {
			t.Errorf("round %d: %s not in the FDB", round+1, mover.mac)
		}
		// The source has handed over: it stays paused until it quits.
		q.Execute(ctx, "quit", nil, nil)
		q.Close()
		select {
		case <-here.Done():
		case <-time.After(10 * time.Second):
			here.Kill()
		}
		here, q = there, nq
	}
	if n := strings.Count(v.Log(), "level=error"); n > 0 {
		t.Logf("vhostd logged %d errors:\n%s", n, tail(v.Log(), 3000))
	}
	if deviceExtra == "packed=on" {
		for _, name := range []string{"src", "dst", "peer"} {
			if f := strings.Join(v.ports(t)[name].Vhost.Features, ","); v.ports(t)[name].Vhost.Negotiated && !strings.Contains(f, "ring_packed") {
				t.Errorf("port %s negotiated %s, want ring_packed", name, f)
			}
		}
	}
}
