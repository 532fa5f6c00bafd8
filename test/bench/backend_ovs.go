package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// OVS is Open vSwitch with DPDK (Debian's openvswitch-switch-dpdk): a
// private ovsdb-server and ovs-vswitchd-dpdk per measurement, a netdev
// bridge with two dpdkvhostuserclient ports and the NORMAL action (MAC
// learning, like vhostd). The ports are vhost-user clients, so the
// generator serves the sockets. In the VM-to-uplink topology the second
// port is OVS's way to a DPDK uplink instead: an Interface of type=dpdk
// with options:dpdk-devargs=net_vhost0,iface=SOCKU, a net_vhost ethdev
// that OVS probes and that serves socket u, as vhostd's uplink does. EAL
// runs without hugepages (LAB.md: --legacy-mem keeps OVS from adding
// --in-memory, and its mempools need -m 2048).
type OVS struct {
	// Vswitchd is the DPDK build of ovs-vswitchd.
	Vswitchd string
}

// DefaultOVSVswitchd is where openvswitch-switch-dpdk installs its daemon.
const DefaultOVSVswitchd = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"

const ovsSchema = "/usr/share/openvswitch/vswitch.ovsschema"

// Name implements Backend.
func (o *OVS) Name() string { return "ovs-dpdk" }

// Check implements Backend.
func (o *OVS) Check() error {
	var missing []string
	for _, b := range []string{"ovsdb-tool", "ovsdb-server", "ovs-vsctl", "ovs-ofctl"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	for _, f := range []string{o.Vswitchd, ovsSchema} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("Open vSwitch with DPDK not installed (missing %s): apt-get install -y openvswitch-switch-dpdk (.ci/bench-deps)",
			strings.Join(missing, ", "))
	}
	return nil
}

// FrontendServer implements Backend: dpdkvhostuserclient ports connect
// to the generator.
func (o *OVS) FrontendServer() bool { return true }

var ovsSeq atomic.Int64

// ovsInst is a running OVS: the database server and the switch.
type ovsInst struct {
	dir      string
	db, sw   *Proc
	prefix   string
	vsctlEnv []string
	// ports are the bridge's two ports: a and b, or a and u.
	ports []string
	// dpctlLog receives the datapath statistics Drops reads, perfLog
	// the PMD statistics CostMark reads.
	dpctlLog, perfLog string
	// perfCleared: CostMark cleared the PMD statistics (window start).
	perfCleared bool
}

// Start implements Backend. The run directory is env.Dir, which also holds
// the generator's sockets.
func (o *OVS) Start(ctx context.Context, env RunEnv) (Instance, error) {
	d := env.Dir
	inst := &ovsInst{dir: d, prefix: fmt.Sprintf("vhb-ovs-%d-%d", os.Getpid(), ovsSeq.Add(1)), dpctlLog: env.Log("ovs-dpctl"), perfLog: env.Log("ovs-pmd-perf")}
	// Every OVS tool finds its files through these, never in the system's
	// /var/run/openvswitch or /etc/openvswitch.
	inst.vsctlEnv = []string{"OVS_RUNDIR=" + d, "OVS_LOGDIR=" + d, "OVS_DBDIR=" + d, "OVS_SYSCONFDIR=" + d}
	env.Tracker.AddPrefix(inst.prefix)
	fail := func(err error) (Instance, error) {
		inst.Stop()
		return nil, fmt.Errorf("ovs-dpdk: %w", err)
	}
	db := filepath.Join(d, "conf.db")
	if out, err := exec.CommandContext(ctx, "ovsdb-tool", "create", db, ovsSchema).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("ovsdb-tool create: %v: %s", err, out))
	}
	dbPath := filepath.Join(d, "db.sock")
	cpu := fmt.Sprint(env.CPU)
	var err error
	// Both daemons run in the foreground (no --detach) as our children,
	// so we hold their PIDs.
	inst.db, err = StartProc(env.Tracker, "ovsdb-server", env.Log("ovsdb-server"), inst.vsctlEnv,
		"taskset", "-c", cpu, "ovsdb-server", db,
		"--remote=punix:"+dbPath, "--pidfile="+filepath.Join(d, "ovsdb-server.pid"),
		"--unixctl="+filepath.Join(d, "ovsdb-server.ctl"), "--log-file="+env.Log("ovsdb-server-file"),
		"-vconsole:off")
	if err != nil {
		return fail(err)
	}
	if err := waitListening(ctx, dbPath, inst.db, 10*time.Second); err != nil {
		return fail(fmt.Errorf("ovsdb-server: %w", err))
	}
	extra := "--no-huge -m 2048 --no-pci --legacy-mem --no-shconf --file-prefix=" + inst.prefix
	if env.HugeDir != "" {
		// On hugepages OVS runs as its users run it: dynamic memory
		// (no --legacy-mem; OVS adds --in-memory itself), -m
		// preallocated from the bench's hugetlbfs.
		extra = fmt.Sprintf("-m %d --socket-limit=%d --no-pci --huge-dir=%s --file-prefix=%s", hugeOVSMB, hugeOVSLimitMB, env.HugeDir, inst.prefix)
	}
	settingsOVS := []string{"--no-wait", "init", "--", "set", "Open_vSwitch", ".",
		"other_config:dpdk-init=true",
		"other_config:dpdk-extra=" + extra,
		fmt.Sprintf("other_config:pmd-cpu-mask=%#x", uint64(1)<<env.CPU),
		// Detailed PMD metrics for dpif-netdev/pmd-perf-show (CostMark).
		"other_config:pmd-perf-metrics=true",
	}
	if env.Case.TSO {
		// Read once at start: vhost ports then offer TSO and OVS
		// carries segments whole where the output port takes them.
		settingsOVS = append(settingsOVS, "other_config:userspace-tso-enable=true")
	}
	if err := inst.vsctl(ctx, settingsOVS...); err != nil {
		return fail(err)
	}
	inst.sw, err = StartProc(env.Tracker, "ovs-vswitchd", env.Log("ovs-vswitchd"), inst.vsctlEnv,
		"taskset", "-c", cpu, o.Vswitchd, "unix:"+dbPath,
		"--pidfile="+filepath.Join(d, "ovs-vswitchd.pid"),
		"--unixctl="+filepath.Join(d, "ovs-vswitchd.ctl"), "--log-file="+env.Log("ovs-vswitchd-file"),
		"-vconsole:off")
	if err != nil {
		return fail(err)
	}
	// Without --no-wait, ovs-vsctl waits until ovs-vswitchd has applied
	// the change: a working switch, or a timeout whose reason is in its
	// log.
	args := []string{"--timeout=60",
		"add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"}
	inst.ports = []string{"a", "b"}
	settings := [][]string{
		{"type=dpdkvhostuserclient", "options:vhost-server-path=" + env.SockA()},
		{"type=dpdkvhostuserclient", "options:vhost-server-path=" + env.SockB()},
	}
	upDevargs := "net_vhost0,iface=" + env.SockU()
	if env.Uplink() {
		inst.ports[1] = "u"
		settings[1] = []string{"type=dpdk", "options:dpdk-devargs=" + upDevargs}
	}
	for i, name := range inst.ports {
		args = append(args, "--", "add-port", "br0", name, "--", "set", "Interface", name)
		args = append(args, settings[i]...)
	}
	vsErr := inst.vsctl(ctx, args...)
	if inst.sw.Exited() {
		return fail(fmt.Errorf("ovs-vswitchd exited (%v)\n%s", inst.sw.ExitErr(), tailFile(env.Log("ovs-vswitchd-file"), 2000)))
	}
	if env.Uplink() {
		// A dpdk port OVS cannot open stays in the database with its
		// reason in the Interface's error column (and ofport -1); that is
		// this machine's OVS, not a passing failure.
		if out, err := inst.vsctlOut(ctx, "get", "Interface", "u", "error"); err == nil {
			// An empty optional column reads "[]"; a reason, a quoted
			// string.
			if why := strings.Trim(strings.TrimSpace(out), `"[]`); why != "" {
				return fail(fmt.Errorf("%w: OVS refused its uplink port (type=dpdk, dpdk-devargs=%s): %s",
					ErrUnsupported, upDevargs, why))
			}
		}
	}
	if vsErr != nil {
		return fail(fmt.Errorf("%w\n%s", vsErr, tailFile(env.Log("ovs-vswitchd-file"), 2000)))
	}
	if v, err := inst.vsctlOut(ctx, "get", "Open_vSwitch", ".", "dpdk_initialized"); err != nil || strings.TrimSpace(v) != "true" {
		return fail(fmt.Errorf("DPDK not initialized in ovs-vswitchd (%q, %v)\n%s", v, err, tailFile(env.Log("ovs-vswitchd-file"), 2000)))
	}
	if env.Uplink() {
		if err := waitSocketFile(ctx, env.SockU(), inst.sw, 10*time.Second); err != nil {
			return fail(fmt.Errorf("uplink port u: %w\n%s", err, tailFile(env.Log("ovs-vswitchd-file"), 2000)))
		}
	}
	// A new bridge has a single NORMAL flow already; set it explicitly so
	// the measurement does not depend on that default.
	mgmt := "unix:" + filepath.Join(d, "br0.mgmt")
	for _, a := range [][]string{{"del-flows", mgmt}, {"add-flow", mgmt, "priority=0,actions=NORMAL"}} {
		if out, err := exec.CommandContext(ctx, "ovs-ofctl", a...).CombinedOutput(); err != nil {
			return fail(fmt.Errorf("ovs-ofctl %s: %v: %s", a[0], err, out))
		}
	}
	return inst, nil
}

func (o *ovsInst) vsctl(ctx context.Context, args ...string) error {
	_, err := o.vsctlOut(ctx, args...)
	return err
}

func (o *ovsInst) vsctlOut(ctx context.Context, args ...string) (string, error) {
	a := append([]string{"--db=unix:" + filepath.Join(o.dir, "db.sock")}, args...)
	cmd := exec.CommandContext(ctx, "ovs-vsctl", a...)
	cmd.Env = append(os.Environ(), o.vsctlEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ovs-vsctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Drops implements DropCounter: the datapath's lost upcalls plus the
// dropped and error counters of the bridge's two ports, read live from
// the datapath (dpctl/show -s; the database's statistics column lags by
// up to 5 s).
func (o *ovsInst) Drops(ctx context.Context) (uint64, error) {
	cmd := exec.CommandContext(ctx, "ovs-appctl", "--target="+filepath.Join(o.dir, "ovs-vswitchd.ctl"), "dpctl/show", "-s")
	cmd.Env = append(os.Environ(), o.vsctlEnv...)
	out, err := cmd.CombinedOutput()
	// Kept next to the other logs, like vhostd's stats: where frames went.
	os.WriteFile(o.dpctlLog, out, 0o644)
	if err != nil {
		return 0, fmt.Errorf("ovs-appctl dpctl/show -s: %v: %s", err, out)
	}
	return ParseOVSDrops(string(out), o.ports)
}

var (
	ovsPortRe = regexp.MustCompile(`^\s*port \d+: (\S+)`)
	ovsLostRe = regexp.MustCompile(`\blost:(\d+)`)
	ovsDropRe = regexp.MustCompile(`\b(?:errors|dropped):(\d+)`)
)

// ParseOVSDrops sums, in the output of "ovs-appctl dpctl/show -s", the
// datapath's lost upcalls and the RX/TX errors and dropped counters of
// the named ports. It fails when a port is missing.
func ParseOVSDrops(out string, ports []string) (uint64, error) {
	want := map[string]bool{}
	for _, p := range ports {
		want[p] = true
	}
	seen := map[string]bool{}
	var n uint64
	add := func(s string) {
		v, _ := strconv.ParseUint(s, 10, 64)
		n += v
	}
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		if m := ovsPortRe.FindStringSubmatch(l); m != nil {
			cur = m[1]
			if want[cur] {
				seen[cur] = true
			}
			continue
		}
		if cur == "" {
			for _, m := range ovsLostRe.FindAllStringSubmatch(l, -1) {
				add(m[1])
			}
			continue
		}
		t := strings.TrimSpace(l)
		if want[cur] && (strings.HasPrefix(t, "RX packets:") || strings.HasPrefix(t, "TX packets:")) {
			for _, m := range ovsDropRe.FindAllStringSubmatch(t, -1) {
				add(m[1])
			}
		}
	}
	for _, p := range ports {
		if !seen[p] {
			return 0, fmt.Errorf("ovs-appctl dpctl/show -s: no port %q in %q", p, out)
		}
	}
	return n, nil
}

// CostMark implements CostMeter: the PMD threads' busy cycles and frames
// received, from ovs-appctl dpif-netdev/pmd-perf-show. The first call
// (the window's start) clears OVS's PMD statistics and returns zeros, so
// the second reads the window alone: pmd-perf-show prints cycles per
// frame rounded to a cycle, exact over one interval, not a difference of
// two such products.
func (o *ovsInst) CostMark(ctx context.Context) (CostMark, error) {
	if !o.perfCleared {
		if _, err := o.appctl(ctx, "dpif-netdev/pmd-stats-clear"); err != nil {
			return CostMark{}, err
		}
		o.perfCleared = true
		return CostMark{}, nil
	}
	out, err := o.appctl(ctx, "dpif-netdev/pmd-perf-show")
	f, _ := os.OpenFile(o.perfLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if f != nil {
		fmt.Fprintf(f, "### %s\n%s\n", time.Now().Format(time.RFC3339Nano), out)
		f.Close()
	}
	if err != nil {
		return CostMark{}, err
	}
	m, err := ParsePMDPerf(out)
	if err != nil {
		return CostMark{}, fmt.Errorf("ovs-appctl dpif-netdev/pmd-perf-show: %w", err)
	}
	return m, nil
}

func (o *ovsInst) appctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ovs-appctl", append([]string{"--target=" + filepath.Join(o.dir, "ovs-vswitchd.ctl")}, args...)...)
	cmd.Env = append(os.Environ(), o.vsctlEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ovs-appctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// WaitReady implements ReadyWaiter: it waits until OVS's PMD polls every
// port's receive queue and none of them is disabled (ovs-appctl
// dpif-netdev/pmd-rxq-show), at most timeout. OVS enables a vhost-user
// port's queues only once its main thread has handled the frontend's
// messages, which can take seconds after the generator saw its link up
// (seen: 8 s, mapping 1 GiB of the generator's 4 KiB pages, "Unreasonably
// long 8181ms poll interval"); frames seeded before then are dropped and
// the closed loop never starts (0 Mpps).
func (o *ovsInst) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := o.appctl(ctx, "dpif-netdev/pmd-rxq-show")
		if err == nil && RxqsEnabled(out, o.ports) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ovs-dpdk: receive queues not all enabled after %v: %v %s", timeout, err, clip(out, 600))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var rxqPortRe = regexp.MustCompile(`port:\s+(\S+)\s+queue-id:\s+\d+(.*)`)

// RxqsEnabled tells whether the output of "ovs-appctl
// dpif-netdev/pmd-rxq-show" lists a queue of every port in ports and no
// queue "(disabled)".
func RxqsEnabled(out string, ports []string) bool {
	seen := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		m := rxqPortRe.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if strings.Contains(m[2], "(disabled)") {
			return false
		}
		seen[m[1]] = true
	}
	for _, p := range ports {
		if !seen[p] {
			return false
		}
	}
	return len(ports) > 0
}

// Pid implements Instance: the switch, whose PMD thread does the work.
func (o *ovsInst) Pid() int {
	if o.sw == nil {
		return 0
	}
	return o.sw.Pid()
}

// Stop implements Instance: the switch first (it closes its vhost-user
// connections), then the database. The tracker removes the run directory
// and the EAL runtime directory.
func (o *ovsInst) Stop() error {
	var errs []error
	if o.sw != nil {
		errs = append(errs, o.sw.Stop(15*time.Second))
	}
	if o.db != nil {
		errs = append(errs, o.db.Stop(5*time.Second))
	}
	return errors.Join(errs...)
}

// waitListening waits until the unix socket at path accepts connections
// (the file appears at bind, a moment before listen: a connect in between
// is refused), p exits, or timeout.
func waitListening(ctx context.Context, path string, p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("exited (%v) before listening on %s", p.ExitErr(), path)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections within %v: %w", path, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tailFile returns the last n bytes of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

var (
	pmdDurRe  = regexp.MustCompile(`Measurement duration:\s+([0-9.]+) s`)
	pmdUsedRe = regexp.MustCompile(`Used TSC cycles:\s+(\d+)\s+\(\s*([0-9.]+) % of total cycles\)`)
	pmdRxRe   = regexp.MustCompile(`Rx packets:\s+(\d+)\s+\([0-9.]+ Kpps, ([0-9.]+) cycles/pkt\)`)
)

// ParsePMDPerf reads the output of "ovs-appctl
// dpif-netdev/pmd-perf-show" (pmd-perf-metrics=true; counters since the
// PMD started or since dpif-netdev/pmd-stats-clear), summed over the PMD
// threads:
//
//	Measurement duration: 14.425 s
//	pmd thread numa_id 0 core_id 1:
//	  - Used TSC cycles:   29268015378  ( 96.6 % of total cycles)
//	  Rx packets:               895168  (62 Kpps, 2420 cycles/pkt)
//
// Frames are "Rx packets"; busy cycles are cycles/pkt x Rx packets (OVS
// computes cycles/pkt as the cycles of busy iterations over the packets
// and prints it rounded to a cycle, so this is exact to half a cycle per
// frame). The TSC rate is derived from the used cycles, their share of
// the total and the duration (to the 0.1% the share is printed with).
// A thread without a line of frames (an idle PMD) adds nothing.
func ParsePMDPerf(out string) (CostMark, error) {
	var m CostMark
	var dur float64
	if d := pmdDurRe.FindStringSubmatch(out); d != nil {
		dur, _ = strconv.ParseFloat(d[1], 64)
	}
	threads := strings.Split(out, "pmd thread ")
	if len(threads) < 2 {
		return m, fmt.Errorf("no pmd thread in %q", clip(out, 300))
	}
	for _, t := range threads[1:] {
		if r := pmdRxRe.FindStringSubmatch(t); r != nil {
			n, _ := strconv.ParseUint(r[1], 10, 64)
			cpp, _ := strconv.ParseFloat(r[2], 64)
			m.Frames += n
			m.Cycles += uint64(math.Round(cpp * float64(n)))
		}
		if u := pmdUsedRe.FindStringSubmatch(t); u != nil && m.TSCHz == 0 && dur > 0 {
			used, _ := strconv.ParseFloat(u[1], 64)
			pct, _ := strconv.ParseFloat(u[2], 64)
			if pct > 0 {
				m.TSCHz = used / (pct / 100) / dur
			}
		}
	}
	return m, nil
}
