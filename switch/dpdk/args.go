package dpdk

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ArgOptions are the inputs to EALArgs besides the user's own arguments.
type ArgOptions struct {
	// Prefix is the --file-prefix, unique per process so that several
	// DPDK processes can run side by side.
	Prefix string
	// Core is the main lcore's CPU (-l). Negative picks the first CPU the
	// process may run on.
	Core int
	// MemoryMB is -m (default 256).
	MemoryMB int
	// PCI lists PCI devices to allow (-a); without any, the PCI bus is
	// off (--no-pci).
	PCI []string
}

// defaultArg is one default EAL argument and the user options that, when
// present, replace it.
type defaultArg struct {
	args     []string
	replaced []string
}

// EALArgs returns the EAL arguments (without argv[0]): defaults that work
// on a machine without hugepages, followed by extra. A default is left out
// when extra holds an option that replaces or contradicts it:
//
//	--no-huge            unless --socket-mem, --socket-limit, --huge-dir, --in-memory, --huge-unlink or --legacy-mem
//	-m 256               unless -m or --socket-mem
//	--no-shconf          unless --in-memory (which implies it)
//	--no-pci             unless -a/--allow, -b/--block or a PCI uplink
//	-l CORE              unless -l, -c, --lcores
//	--file-prefix=PREFIX unless --file-prefix
//	--no-telemetry       unless --telemetry
func EALArgs(extra []string, o ArgOptions) []string {
	core := o.Core
	if core < 0 {
		core = FirstCPU()
	}
	mem := o.MemoryMB
	if mem <= 0 {
		mem = 256
	}
	defs := []defaultArg{
		{[]string{"--no-huge"}, []string{"--socket-mem", "--socket-limit", "--huge-dir", "--in-memory", "--huge-unlink", "--legacy-mem"}},
		{[]string{"-m", strconv.Itoa(mem)}, []string{"-m", "--socket-mem"}},
		{[]string{"--no-shconf"}, []string{"--in-memory"}},
		{[]string{"-l", strconv.Itoa(core)}, []string{"-l", "-c", "--lcores"}},
		{[]string{"--file-prefix=" + o.Prefix}, []string{"--file-prefix"}},
		{[]string{"--no-telemetry"}, []string{"--telemetry"}},
	}
	if len(o.PCI) == 0 {
		defs = append(defs, defaultArg{[]string{"--no-pci"}, []string{"-a", "--allow", "-b", "--block", "-w", "--pci-whitelist"}})
	}
	var out []string
	for _, d := range defs {
		if !hasOption(extra, d.replaced...) {
			out = append(out, d.args...)
		}
	}
	for _, p := range o.PCI {
		out = append(out, "-a", p)
	}
	return append(out, extra...)
}

// hasOption reports whether args hold any of the options, as "-x", "-xVAL",
// "--opt" or "--opt=VAL".
func hasOption(args []string, opts ...string) bool {
	for _, a := range args {
		for _, o := range opts {
			if a == o || strings.HasPrefix(a, o+"=") || (len(o) == 2 && o[1] != '-' && strings.HasPrefix(a, o)) {
				return true
			}
		}
	}
	return false
}

// FilePrefix returns the --file-prefix that args set, or "".
func FilePrefix(args []string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--file-prefix="); ok {
			return v
		}
		if a == "--file-prefix" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// FirstCPU returns the lowest CPU the calling thread may run on (0 if
// that cannot be read).
func FirstCPU() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	for i := 0; i < len(set)*64; i++ {
		if set.IsSet(i) {
			return i
		}
	}
	return 0
}

var pciRe = regexp.MustCompile(`^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7](,|$)`)

// IsPCI reports whether devargs names a PCI device ("0000:01:00.0" or
// "01:00.0", optionally followed by ",key=value" options).
func IsPCI(devargs string) bool { return pciRe.MatchString(devargs) }

// HugepagesTotal returns HugePages_Total from /proc/meminfo (-1 if
// unknown), for hints when EAL init fails.
func HugepagesTotal() int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "HugePages_Total:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// initHint says what to try after EAL init failed with args and logged
// lines.
func initHint(args, logged []string) string {
	text := strings.Join(logged, "\n")
	switch {
	case !hasOption(args, "--no-huge") && HugepagesTotal() <= 0:
		return "this machine has no hugepages (HugePages_Total is 0): leave --no-huge in (vhostd adds it unless --eal asks for hugepage memory) or reserve hugepages (sysctl vm.nr_hugepages=512)"
	case strings.Contains(text, "hugepage"):
		return "hugepage memory is not usable: add --no-huge to --eal, or check the hugetlbfs mount and vm.nr_hugepages"
	case strings.Contains(text, "lcore") || strings.Contains(text, "core"):
		return "the lcore list is not usable here: pick CPUs this process may run on with --eal '-l N' (see nproc, taskset -p $$)"
	case strings.Contains(text, "file-prefix") || strings.Contains(text, "Cannot create lock"):
		return "another DPDK process may use the same --file-prefix: pass a different one in --eal"
	case os.Geteuid() != 0:
		return "DPDK usually needs root: run vhostd as root"
	}
	return fmt.Sprintf("check the --eal arguments (vhostd ran EAL with: %s); dpdk-testpmd --help lists EAL options", strings.Join(args, " "))
}
