package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
)

// TestQEMUMigrationData (commit 136d5b8: a peer guest streams 32-96
// MiB over TCP into the migrating guest, which checks their SHA-256
// after the migration) is not here: with TCP streams running through
// the migration, the migrated guest crashed or hung afterwards in about
// half the runs (the data that did arrive was intact). Under the same
// load, TCG guests migrated over DPDK's own vhost backend also show
// guest-kernel pages (pointers, jiffies) that differ between source and
// destination, which no backend writes: that points at QEMU under TCG
// losing guest writes under load, not at the backend, and a test of
// vhostd cannot be built on it until it is understood. The dirty logging
// of what vhostd writes is checked by TestQEMUMigrationRxRing instead.

// TestQEMUMigrationRxRing is the sharpest check of the dirty logging of
// receive buffers: it compares the migrated guest's memory with the
// source's, page by page, after the migration.
//
// The migrating guest takes eth0 down: its driver leaves the receive
// buffers it posted in the ring but no longer consumes any, so vhostd is
// the only writer of those buffers (and of the used ring) while a peer
// pings the guest 20 times a second across the migration. The
// destination QEMU runs with -S: once migrated, it stays paused, and no
// one writes its memory (its vhost-user device does not even start). The
// source is paused too. Both memories are then saved with QMP pmemsave
// and must be equal: a page vhostd wrote after QEMU last copied it, and
// did not mark in the log, differs.
func TestQEMUMigrationRxRing(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	sock := func(name string) string { return filepath.Join(dir, name+".sock") }
	v := startVhostd(t, dir, "--socket", "src="+sock("src"), "--socket", "dst="+sock("dst"), "--socket", "peer="+sock("peer"))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	mover := vm{"vm1", "10.9.0.1", "52:54:00:00:00:01", sock("src")}
	peer := vm{"vm2", "10.9.0.2", "52:54:00:00:00:02", sock("peer")}
	cfg := mover.config(t, kernel, initrd)
	cfg.QMPSocket = filepath.Join(dir, "q0.qmp")
	guests := startGuests(t, ctx, cfg, peer.config(t, kernel, initrd))
	here, pg := guests[0], guests[1]
	q := dialQMP(t, ctx, cfg.QMPSocket)
	warmUp(t, ctx, pg, mover.ip)
	// The peer keeps sending to the guest's address although it no longer
	// answers ARP.
	if out, code, err := pg.Run(ctx, "arp -s "+mover.ip+" "+mover.mac); err != nil || code != 0 {
		t.Fatalf("peer: arp -s: exit %d, %v: %s", code, err, out)
	}
	if out, code, err := here.Run(ctx, "ip link set eth0 down"); err != nil || code != 0 {
		t.Fatalf("guest: eth0 down: exit %d, %v: %s", code, err, out)
	}

	// 100 pings, 50 ms apart: fewer than the receive buffers the driver
	// posted (a 256-entry ring), so none is dropped for want of room.
	pinged := make(chan error, 1)
	go func() {
		_, _, err := pg.Run(ctx, "ping -q -i 0.05 -c 100 -W 1 "+mover.ip)
		pinged <- err
	}()
	time.Sleep(time.Second)
	before := v.stats(t)["src"].TxPackets
	next := vm{"vm1-dst", mover.ip, mover.mac, sock("dst")}
	ncfg := next.config(t, kernel, initrd)
	ncfg.QMPSocket = filepath.Join(dir, "q1.qmp")
	_, nq, _ := migrateTo(t, ctx, q, ncfg, "unix:"+filepath.Join(dir, "mig1"), "-S")
	during := v.stats(t)["src"].TxPackets - before
	if err := <-pinged; err != nil {
		t.Fatalf("peer: ping: %v", err)
	}
	t.Logf("vhostd wrote %d frames into the guest's receive buffers from the start of the migration to its end", during)
	if during < 5 {
		t.Errorf("only %d frames reached the guest during the migration: the test wrote too little to say anything", during)
	}

	compareMemories(t, ctx, q, nq)
	q.Execute(ctx, "quit", nil, nil)
	select {
	case <-here.Done():
	case <-time.After(10 * time.Second):
		here.Kill()
	}
	if n := strings.Count(v.Log(), "level=error"); n > 0 {
		t.Logf("vhostd logged %d errors:\n%s", n, tail(v.Log(), 3000))
	}
}

// compareMemories saves the memory of the migrated guest's source (q,
// paused after the migration) and destination (nq, started with -S and
// paused) with pmemsave and fails the test unless they agree on every
// page.
func compareMemories(t *testing.T, ctx context.Context, q, nq *qemu.QMP) {
	t.Helper()
	for _, c := range []struct {
		q    *qemu.QMP
		want string
	}{{q, "postmigrate"}, {nq, "paused"}} {
		var st struct {
			Status string `json:"status"`
		}
		if err := c.q.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != c.want {
			t.Fatalf("QEMU status %q, %v; want %s", st.Status, err, c.want)
		}
	}
	mems := filepath.Join(t.TempDir(), "mem")
	size := int64(qemu.DefaultMemoryMB) << 20
	for i, qq := range []*qemu.QMP{q, nq} {
		args := map[string]any{"val": 0, "size": size, "filename": fmt.Sprintf("%s%d", mems, i)}
		if err := qq.Execute(ctx, "pmemsave", args, nil); err != nil {
			t.Fatalf("pmemsave: %v", err)
		}
	}
	diff, err := diffPages(mems+"0", mems+"1", size)
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		var show []string
		for _, d := range diff[:min(len(diff), 16)] {
			show = append(show, fmt.Sprintf("%#x (bytes %#x-%#x, %d differ)", d.addr, d.first, d.last, d.n))
		}
		t.Errorf("%d of %d guest pages differ between source and destination after the migration; first ones:\n%s", len(diff), size/4096, strings.Join(show, "\n"))
	} else {
		t.Logf("all %d guest pages equal on source and destination", size/4096)
	}
}

// pageDiff is a page that differs between two memory dumps: its address,
// the offsets of the first and last differing bytes in it, and how many
// bytes differ.
type pageDiff struct {
	addr        uint64
	first, last int
	n           int
}

// diffPages compares the first size bytes of files a and b in 4 KiB
// pages and returns the pages that differ.
func diffPages(a, b string, size int64) ([]pageDiff, error) {
	fa, err := os.Open(a)
	if err != nil {
		return nil, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return nil, err
	}
	defer fb.Close()
	const page = 4096
	pa, pb := make([]byte, 1<<20), make([]byte, 1<<20)
	var diff []pageDiff
	for off := int64(0); off < size; off += int64(len(pa)) {
		if _, err := io.ReadFull(fa, pa); err != nil {
			return nil, fmt.Errorf("%s at %#x: %w", a, off, err)
		}
		if _, err := io.ReadFull(fb, pb); err != nil {
			return nil, fmt.Errorf("%s at %#x: %w", b, off, err)
		}
		for p := 0; p < len(pa); p += page {
			x, y := pa[p:p+page], pb[p:p+page]
			if bytes.Equal(x, y) {
				continue
			}
			d := pageDiff{addr: uint64(off) + uint64(p), first: -1}
			for i := range x {
				if x[i] != y[i] {
					if d.first < 0 {
						d.first = i
					}
					d.last = i
					d.n++
				}
			}
			diff = append(diff, d)
		}
	}
	return diff, nil
}
