package hugepages_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/test/hugepages"
)

// Reserve gives a mount where a file of huge pages can be made and
// mapped; Release gives the pool back to what it was.
func TestReserveRelease(t *testing.T) {
	nr := func() string {
		b, err := os.ReadFile("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before := nr()
	r, err := hugepages.Reserve(4, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Granted != 4 {
		t.Errorf("granted %d of 4", r.Granted)
	}
	f, err := os.CreateTemp(r.Dir, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	os.Remove(f.Name())
	if err := f.Truncate(hugepages.Size); err != nil {
		t.Fatalf("size a file on %s: %v", r.Dir, err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, hugepages.Size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("map a huge page: %v", err)
	}
	m[0], m[hugepages.Size-1] = 1, 2
	unix.Munmap(m)
	f.Close()
	dir := r.Dir
	if err := r.Release(); err != nil {
		t.Fatal(err)
	}
	if after := nr(); after != before {
		t.Errorf("nr_hugepages %s before, %s after", before, after)
	}
	if strings.HasPrefix(filepath.Base(dir), "vhostd-hugepages-") {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("mount %s made by Reserve left behind", dir)
		}
	}
}
