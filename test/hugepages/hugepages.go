// Package hugepages reserves 2 MiB huge pages and a hugetlbfs mount for a
// test or benchmark, and gives both back after: guests and DPDK then run
// as they do in production (see ../shared/LAB.md: the kernel grants them
// here, as root).
package hugepages

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Size is the huge page size this package reserves.
const Size = 2 << 20

// sysDir holds the kernel's counters of 2 MiB pages.
const sysDir = "/sys/kernel/mm/hugepages/hugepages-2048kB"

// Reservation is huge pages and a mount, held until Release.
type Reservation struct {
	// Dir is a hugetlbfs mount of 2 MiB pages: an existing one, or one
	// made for the reservation.
	Dir string
	// Asked and Granted are the free pages wanted and found after
	// reserving. Granted may be less than Asked only if Reserve was
	// told to accept it.
	Asked, Granted int
	added          int    // pages added to nr_hugepages, taken back by Release
	mounted        string // the mount made, removed by Release
}

// Reserve makes sure n free 2 MiB huge pages and a hugetlbfs mount exist,
// growing the kernel's pool (nr_hugepages) by what is missing and mounting
// hugetlbfs in a temporary directory when none is mounted. With
// acceptFewer, a kernel that grants fewer pages (fragmented memory) is not
// an error: Granted says how many there are. Release gives back what
// Reserve took. It needs root.
func Reserve(n int, acceptFewer bool) (*Reservation, error) {
	r := &Reservation{Asked: n}
	nr, err := readInt("nr_hugepages")
	if err != nil {
		return nil, err
	}
	free, err := readInt("free_hugepages")
	if err != nil {
		return nil, err
	}
	if free < n {
		if err := writeInt("nr_hugepages", nr+n-free); err != nil {
			return nil, fmt.Errorf("reserve %d huge pages (as root: echo %d > %s/nr_hugepages): %w", n-free, nr+n-free, sysDir, err)
		}
		now, err := readInt("nr_hugepages")
		if err != nil {
			return nil, err
		}
		r.added = max(now-nr, 0)
		if free, err = readInt("free_hugepages"); err != nil {
			r.Release()
			return nil, err
		}
	}
	r.Granted = min(free, n)
	if free < n && !acceptFewer {
		r.Release()
		return nil, fmt.Errorf("the kernel granted %d of %d free 2 MiB huge pages (memory too fragmented? try: echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory)", free, n)
	}
	if r.Dir, err = findMount(); err != nil {
		r.Release()
		return nil, err
	}
	if r.Dir == "" {
		dir, err := os.MkdirTemp("", "vhostd-hugepages-")
		if err != nil {
			r.Release()
			return nil, err
		}
		if err := unix.Mount("none", dir, "hugetlbfs", 0, "pagesize=2M"); err != nil {
			os.Remove(dir)
			r.Release()
			return nil, fmt.Errorf("mount hugetlbfs on %s: %w", dir, err)
		}
		r.Dir, r.mounted = dir, dir
	}
	return r, nil
}

// Release unmounts what Reserve mounted and shrinks the pool by what it
// added (pages still in use stay until freed: the kernel then shrinks the
// pool as they are). Calling it again does nothing.
func (r *Reservation) Release() error {
	var first error
	if r.mounted != "" {
		if err := unix.Unmount(r.mounted, unix.MNT_DETACH); err != nil {
			first = fmt.Errorf("unmount %s: %w", r.mounted, err)
		}
		os.Remove(r.mounted)
		r.mounted = ""
	}
	if r.added > 0 {
		nr, err := readInt("nr_hugepages")
		if err == nil {
			err = writeInt("nr_hugepages", max(nr-r.added, 0))
		}
		if err != nil && first == nil {
			first = fmt.Errorf("give back %d huge pages: %w", r.added, err)
		}
		r.added = 0
	}
	return first
}

// Added is how many pages Reserve added to the kernel's pool.
func (r *Reservation) Added() int { return r.added }

// findMount returns a hugetlbfs mount of 2 MiB pages, or "".
func findMount() (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[2] != "hugetlbfs" {
			continue
		}
		// pagesize= is listed when it is not the default; the default
		// here is 2 MiB (x86-64).
		if opts := fields[3]; !strings.Contains(opts, "pagesize=") || strings.Contains(opts, "pagesize=2M") {
			return fields[1], nil
		}
	}
	return "", sc.Err()
}

func readInt(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(sysDir, name))
	if err != nil {
		return 0, fmt.Errorf("huge pages: %w (does the kernel have 2 MiB huge pages?)", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func writeInt(name string, v int) error {
	return os.WriteFile(filepath.Join(sysDir, name), []byte(strconv.Itoa(v)), 0)
}
