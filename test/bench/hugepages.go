package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Hugepages: the bench measures every case twice, without hugepages (the
// processes' memory in 4 KiB pages, as a guest without hugepage backing)
// and with DPDK's memory on 2 MiB pages (generator, DPDK's backend, OVS;
// vhostd maps the guest memory the generator hands it, so it follows the
// generator). DPDK and OVS users run the second; the issue asks for both
// side by side.

// Memory of each DPDK process on hugepages (EAL -m, preallocated). The
// generator's and dpdk-io's mempools (16384 mbufs of ~2.3 KiB) and rings
// take under 64 MiB; OVS's per-MTU mempool more.
const (
	hugeGenMB  = 256
	hugeDPDKMB = 256
	hugeOVSMB  = 512
	// hugeOVSLimitMB caps OVS (--socket-limit): its memory is dynamic
	// and grows past -m (seen: about 890 MiB with a dpdk uplink port,
	// which left the generator too little).
	hugeOVSLimitMB = 1024
	// hugeMarginPages is what the EAL takes beyond -m (its own
	// structures; seen: 64 pages for -m 256 with --in-memory).
	hugeMarginPages = 64
)

const nrHugepagesPath = "/proc/sys/vm/nr_hugepages"

// HugePlan is what the hugepage configuration can run with the pages the
// kernel granted.
type HugePlan struct {
	// PageKB is the hugepage size in KiB (2048).
	PageKB int
	// Need is the pages asked for: the generator and the largest backend
	// at once, plus margins; NeedNoOVS the same without OVS.
	Need, NeedNoOVS int
	// Got is the pages the bench could use: free hugepages once it asked.
	Got int
	// Run tells whether the hugepage configuration runs at all; OVS
	// whether OVS runs in it.
	Run, OVS bool
	// Note says what the bench fell back to, when Got < Need.
	Note string
}

// mbPages converts MiB into pages of pageKB, rounding up.
func mbPages(mb, pageKB int) int { return (mb*1024 + pageKB - 1) / pageKB }

// PlanHuge computes the pages the hugepage configuration needs (one
// repetition at a time: the generator and one backend, each with its
// margin) and decides, from the free pages got, what runs: everything;
// everything but OVS (the largest); or nothing on hugepages. The note
// says which, and why.
func PlanHuge(pageKB, got int, withOVS bool) HugePlan {
	gen := mbPages(hugeGenMB, pageKB) + hugeMarginPages
	dpdk := mbPages(hugeDPDKMB, pageKB) + hugeMarginPages
	ovs := mbPages(hugeOVSLimitMB, pageKB) + hugeMarginPages
	p := HugePlan{PageKB: pageKB, Got: got, NeedNoOVS: gen + dpdk}
	p.Need = p.NeedNoOVS
	if withOVS {
		p.Need = gen + max(dpdk, ovs)
	}
	switch {
	case got >= p.Need:
		p.Run, p.OVS = true, withOVS
	case got >= p.NeedNoOVS:
		p.Run = true
		p.Note = fmt.Sprintf("the kernel granted %d of the %d hugepages (%d KiB) asked: the hugepage configuration runs without ovs-dpdk (it needs %d); its ovs-dpdk rows are skipped",
			got, p.Need, pageKB, p.Need)
	default:
		p.Note = fmt.Sprintf("the kernel granted %d of the %d hugepages (%d KiB) asked (at least %d needed): the hugepage configuration is skipped, only the no-hugepage one is measured",
			got, p.Need, pageKB, p.NeedNoOVS)
	}
	return p
}

// HugeSetup is the hugepages and the hugetlbfs mount the bench set up,
// and how to give them back.
type HugeSetup struct {
	Plan HugePlan
	// Dir is the hugetlbfs mount point DPDK's --huge-dir gets.
	Dir string
	// Mounted tells whether the bench mounted Dir itself (then it
	// unmounts it and removes the directory).
	Mounted bool
	// Before is nr_hugepages before the bench; Added is what it added
	// (and takes away again at the end: other users' pages are left).
	Before, Added int
	// Released is filled by Release: what was given back.
	Released string
	released bool
}

// readInt reads a /proc or /sys file holding one integer.
func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func writeInt(path string, v int) error {
	return os.WriteFile(path, []byte(strconv.Itoa(v)+"\n"), 0o644)
}

// hugeFree returns the free pages of the default hugepage size and its
// size in KiB, from /proc/meminfo.
func hugeFree() (free, pageKB int, err error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	return ParseMeminfoHuge(string(b))
}

// ParseMeminfoHuge reads HugePages_Free and Hugepagesize (KiB) from
// /proc/meminfo's text.
func ParseMeminfoHuge(s string) (free, pageKB int, err error) {
	free, pageKB = -1, -1
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		switch strings.TrimSpace(k) {
		case "HugePages_Free":
			free = n
		case "Hugepagesize":
			pageKB = n
		}
	}
	if free < 0 || pageKB <= 0 {
		return 0, 0, errors.New("/proc/meminfo: no HugePages_Free or Hugepagesize")
	}
	return free, pageKB, nil
}

// FindHugetlbfs returns the mount point of a hugetlbfs of page size
// pageKB in /proc/mounts' text ("" if none). A mount without a pagesize
// option has the default size.
func FindHugetlbfs(mounts string, pageKB, defaultKB int) string {
	for _, l := range strings.Split(mounts, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[2] != "hugetlbfs" {
			continue
		}
		size := defaultKB
		for _, o := range strings.Split(f[3], ",") {
			if v, ok := strings.CutPrefix(o, "pagesize="); ok {
				size = parseSizeKB(v)
			}
		}
		if size == pageKB {
			// /proc/mounts escapes spaces as \040.
			return strings.ReplaceAll(f[1], `\040`, " ")
		}
	}
	return ""
}

// parseSizeKB parses a hugetlbfs pagesize option ("2M", "1024M", "1G",
// "2048k") into KiB; 0 if it cannot.
func parseSizeKB(s string) int {
	mult := 1
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1024*1024, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1024, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		s = s[:len(s)-1]
	default:
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0
		}
		return n / 1024
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n * mult
}

// SetupHugepages asks the kernel for the pages the hugepage configuration
// needs (on top of what is reserved already: nr_hugepages is raised by
// the missing free pages, never lowered) and mounts a private hugetlbfs
// when none is mounted. What it got is in the returned plan; call
// Release (also after errors: it undoes what was done).
func SetupHugepages(withOVS bool) (*HugeSetup, error) {
	h := &HugeSetup{}
	free, pageKB, err := hugeFree()
	if err != nil {
		return h, err
	}
	want := PlanHuge(pageKB, 0, withOVS).Need
	if h.Before, err = readInt(nrHugepagesPath); err != nil {
		return h, err
	}
	if free < want {
		if err := writeInt(nrHugepagesPath, h.Before+want-free); err != nil {
			return h, fmt.Errorf("reserve hugepages: %w", err)
		}
		now, err := readInt(nrHugepagesPath)
		if err != nil {
			return h, err
		}
		h.Added = max(now-h.Before, 0)
		if free, _, err = hugeFree(); err != nil {
			return h, err
		}
	}
	h.Plan = PlanHuge(pageKB, free, withOVS)
	if !h.Plan.Run {
		return h, nil
	}
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return h, err
	}
	if h.Dir = FindHugetlbfs(string(mounts), pageKB, pageKB); h.Dir != "" {
		return h, nil
	}
	dir := filepath.Join("/tmp", fmt.Sprintf("vhb-huge-%d", os.Getpid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return h, err
	}
	if err := syscall.Mount("none", dir, "hugetlbfs", 0, fmt.Sprintf("pagesize=%dK", pageKB)); err != nil {
		os.Remove(dir)
		return h, fmt.Errorf("mount hugetlbfs on %s: %w", dir, err)
	}
	h.Dir, h.Mounted = dir, true
	return h, nil
}

// Summary says what the bench set up, for the report.
func (h *HugeSetup) Summary() string {
	if h == nil {
		return "hugepages: not used"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "hugepages: %d pages of %d KiB asked, %d free to use (nr_hugepages %d before, %d added by the bench)",
		h.Plan.Need, h.Plan.PageKB, h.Plan.Got, h.Before, h.Added)
	if h.Dir != "" {
		if h.Mounted {
			fmt.Fprintf(&b, "; hugetlbfs mounted by the bench on %s", h.Dir)
		} else {
			fmt.Fprintf(&b, "; hugetlbfs already mounted on %s", h.Dir)
		}
	}
	if h.Plan.Note != "" {
		fmt.Fprintf(&b, "\n  %s", h.Plan.Note)
	}
	if h.Released != "" {
		fmt.Fprintf(&b, "\n  given back: %s", h.Released)
	}
	return b.String()
}

// Release gives back what SetupHugepages took: it unmounts the bench's own
// hugetlbfs (lazily when something still holds it: another program may
// have picked the mount up) and removes its directory, and lowers
// nr_hugepages by the pages the bench added (pages others added since stay
// theirs). It runs once; later calls return nil.
func (h *HugeSetup) Release() error {
	if h == nil || h.released {
		return nil
	}
	h.released = true
	var errs []error
	var done []string
	if h.Mounted {
		// Files DPDK left (none with --in-memory) would hold pages.
		if ents, err := os.ReadDir(h.Dir); err == nil {
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "vhb-") || strings.HasPrefix(e.Name(), "vhostd-tp-") {
					os.RemoveAll(filepath.Join(h.Dir, e.Name()))
				}
			}
		}
		err := syscall.Unmount(h.Dir, 0)
		if errors.Is(err, syscall.EBUSY) {
			err = syscall.Unmount(h.Dir, syscall.MNT_DETACH)
			if err == nil {
				done = append(done, "unmounted "+h.Dir+" (lazily: another process still used it)")
			}
		} else if err == nil {
			done = append(done, "unmounted "+h.Dir)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", h.Dir, err))
		} else if err := os.Remove(h.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if h.Added > 0 {
		cur, err := readInt(nrHugepagesPath)
		if err == nil {
			err = writeInt(nrHugepagesPath, ReleaseTarget(cur, h.Added))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("give back %d hugepages: %w", h.Added, err))
		} else {
			now, _ := readInt(nrHugepagesPath)
			done = append(done, fmt.Sprintf("nr_hugepages %d -> %d", cur, now))
		}
	}
	h.Released = strings.Join(done, ", ")
	if len(errs) > 0 {
		h.Released += fmt.Sprintf(" (FAILED: %v)", errors.Join(errs...))
	}
	if h.Released == "" {
		h.Released = "nothing to give back (no pages added, no mount made)"
	}
	return errors.Join(errs...)
}

// ReleaseTarget is the nr_hugepages to write when giving back added pages
// from cur: never below zero.
func ReleaseTarget(cur, added int) int { return max(cur-added, 0) }
