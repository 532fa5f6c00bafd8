package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/hugepages"
)

// TestHugePageGuests boots two guests whose RAM is a file on hugetlbfs
// (memory-backend-file, the usual production setup): vhostd maps regions
// of 2 MiB pages, whose mappings must be aligned to them, and the guests
// ping each other through it.
func TestHugePageGuests(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	const memMB = 128
	hp, err := hugepages.Reserve(2*memMB*(1<<20)/hugepages.Size, false)
	if err != nil {
		t.Fatalf("huge pages for the guests: %v", err)
	}
	t.Cleanup(func() {
		if err := hp.Release(); err != nil {
			t.Errorf("give back huge pages: %v", err)
		}
	})
	t.Logf("huge pages: %d on %s (%d added to the pool)", hp.Granted, hp.Dir, hp.Added())
	dir := sockDir(t)
	v := startVhostd(t, dir, "--socket", "vm1="+filepath.Join(dir, "vm1.sock"), "--socket", "vm2="+filepath.Join(dir, "vm2.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vms := []vm{
		{"vm1", "10.9.0.1", "52:54:00:00:00:01", filepath.Join(dir, "vm1.sock")},
		{"vm2", "10.9.0.2", "52:54:00:00:00:02", filepath.Join(dir, "vm2.sock")},
	}
	var cfgs []qemu.GuestConfig
	for _, g := range vms {
		c := g.config(t, kernel, initrd)
		c.MemoryMB, c.HugePages = memMB, hp.Dir
		cfgs = append(cfgs, c)
	}
	guests := startGuests(t, ctx, cfgs...)
	warmUp(t, ctx, guests[0], vms[1].ip)
	for _, size := range []int{56, 1400, 4000} {
		ping(t, ctx, guests[0], "vm1", vms[1].ip, size, 5)
		ping(t, ctx, guests[1], "vm2", vms[0].ip, size, 5)
	}
	// vhostd mapped the guests' RAM as what it is: huge pages.
	if got, want := hugeMapped(t, v.cmd.Process.Pid), uint64(2*memMB)<<20; got < want {
		t.Errorf("vhostd maps %d MiB of 2 MiB pages, want at least %d (both guests' RAM)", got>>20, want>>20)
	}
	st := v.stats(t)
	for _, name := range []string{"vm1", "vm2"} {
		if s := st[name]; s.RxPackets < 30 || s.TxPackets < 30 {
			t.Errorf("port %s counted rx %d tx %d: fewer than the pings sent", name, s.RxPackets, s.TxPackets)
		}
	}
}

// hugeMapped is how many bytes process pid maps with 2 MiB pages.
func hugeMapped(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var total, size uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "Size:":
			size, _ = strconv.ParseUint(f[1], 10, 64)
		case len(f) == 3 && f[0] == "KernelPageSize:" && f[1] == "2048":
			total += size << 10
		}
	}
	return total
}
