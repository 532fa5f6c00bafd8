package matrix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/testpmd"
	"github.com/vhostd/vhostd/vhost"
)

// Runner runs rows: vhostd with two ports a and b, both masked as the
// combination says, a frontend on both, a trace of both.
type Runner struct {
	// Vhostd is the vhostd binary.
	Vhostd string
	// Kernel and Initrd are the test guest (test/guestimage), for QEMU rows.
	Kernel, Initrd string
	// Frames is how many frames each testpmd port sends per frame size
	// (60 and 1500 bytes); 0 means 2000.
	Frames int
	// PingSizes are the ping payload sizes; nil means 56, 1400, 4000.
	PingSizes []int
	// Pings is how many pings each guest sends per size; 0 means 3.
	Pings int
	// Logf, if set, gets progress lines.
	Logf func(format string, args ...any)
}

const (
	macA = "02:00:00:00:00:0a"
	macB = "02:00:00:00:00:0b"
)

func (r *Runner) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

// Run runs combination c with frontend f and returns the judged row. It
// fails only in the row: every error ends up in Row.Err.
func (r *Runner) Run(ctx context.Context, c Combination, f Frontend) Row {
	row := Row{Combination: c, Frontend: f}
	start := time.Now()
	defer func() { row.Elapsed = time.Since(start) }()
	err := r.run(ctx, &row)
	if err != nil && row.Err == "" {
		row.Err = err.Error()
	}
	Judge(&row)
	row.Elapsed = time.Since(start)
	return row
}

func (r *Runner) run(ctx context.Context, row *Row) error {
	dir, err := os.MkdirTemp("/tmp", "vmx") // short: sun_path is 108 bytes
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	v, err := startVhostd(ctx, r.Vhostd, dir, row.Combination.DisableArg(), row.Combination.Queues())
	if err != nil {
		return err
	}
	defer func() {
		if err := v.stop(); err != nil && row.Err == "" {
			row.Err = err.Error()
		}
	}()

	// The trace: subscribed before any frontend connects, so it holds
	// the whole negotiation.
	tctx, tcancel := context.WithCancel(ctx)
	var mu sync.Mutex
	subscribed := make(chan struct{})
	traceDone := make(chan error, 1)
	go func() {
		traceDone <- control.Trace(tctx, v.ctl, "", func(control.TraceStart) error {
			close(subscribed)
			return nil
		}, func(e vhost.TraceEvent) error {
			mu.Lock()
			row.Events = append(row.Events, e)
			mu.Unlock()
			return nil
		})
	}()
	defer func() {
		tcancel()
		<-traceDone
	}()
	select {
	case <-subscribed:
	case err := <-traceDone:
		traceDone <- err
		return fmt.Errorf("trace: %v", err)
	case <-time.After(30 * time.Second):
		return errors.New("trace: no answer from vhostd within 30s")
	}

	// collect reads vhostd's view while the frontend is still attached
	// (the frontends call it before they tear down).
	// mark is called when the frontend is up, just before the counted
	// traffic: drops before it (a guest sending while its peer's driver
	// is still setting up) are reported apart and fail nothing.
	var cerr error
	var before map[string]uint64
	mark := func() {
		var d map[string]uint64
		if cerr = v.drops(ctx, &d); cerr == nil {
			before = d
		}
	}
	collect := func() {
		if err := v.collect(ctx, row, before); err != nil && cerr == nil {
			cerr = err
		}
	}
	var ferr error
	switch row.Frontend {
	case Testpmd:
		ferr = r.runTestpmd(ctx, dir, row, mark, collect)
	case QEMU:
		ferr = r.runQEMU(ctx, dir, row, mark, collect)
	default:
		ferr = fmt.Errorf("unknown frontend %q", row.Frontend)
	}
	if ferr == nil {
		ferr = cerr
	}
	if ferr != nil {
		ferr = fmt.Errorf("%w; vhostd log ends: %s", ferr, lastLines(v.Log(), 3))
	}
	// Let the trace catch up before it is cut (it streams asynchronously).
	time.Sleep(100 * time.Millisecond)
	return ferr
}

// runTestpmd sends Frames frames each way between testpmd's two ports,
// at 60 and at 1500 bytes; it calls collect before testpmd exits.
func (r *Runner) runTestpmd(ctx context.Context, dir string, row *Row, mark, collect func()) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	n := r.Frames
	if n == 0 {
		n = 2000
	}
	q := row.Combination.Queues()
	if n%q != 0 {
		return fmt.Errorf("%d frames per port do not split evenly over %d queues", n, q)
	}
	ports := []testpmd.Port{
		{Socket: filepath.Join(dir, "a.sock"), MAC: macA},
		{Socket: filepath.Join(dir, "b.sock"), MAC: macB},
	}
	for i := range ports {
		if q > 1 {
			ports[i].Queues = q
		}
		ports[i].PackedVQ = row.Combination.Packed
	}
	off := false
	for _, k := range row.Combination.FrontendOff {
		for i := range ports {
			switch k {
			case "mrg_rxbuf":
				ports[i].MrgRxbuf = &off
			case "in_order":
				ports[i].InOrder = &off
			default:
				return fmt.Errorf("testpmd cannot turn off %s", k)
			}
		}
	}
	var extra []string
	if q > 1 {
		// Several flows (the source address varies), so that vhostd's
		// flow hashing spreads them over the receiving port's queues.
		extra = []string{"--txonly-multi-flow"}
	}
	tp, err := testpmd.Start(ctx, testpmd.Config{
		Ports:     ports,
		PeerMACs:  []string{macB, macA},
		TxPkts:    60,
		LogFile:   filepath.Join(dir, "testpmd.log"),
		ExtraArgs: extra,
	})
	if err != nil {
		return fmt.Errorf("testpmd: %w", err)
	}
	defer tp.Close()
	defer collect()
	if err := tp.WaitLinksUp(ctx); err != nil {
		return fmt.Errorf("testpmd links: %w", err)
	}
	mark()
	for _, size := range []int{60, 1500} {
		if size != 60 {
			if _, err := tp.Cmd(ctx, fmt.Sprintf("set txpkts %d", size)); err != nil {
				return fmt.Errorf("testpmd: %w", err)
			}
		}
		st, err := tp.SendExact(ctx, n, testpmd.SendOptions{})
		for _, s := range st {
			row.Sent += s.TxPackets
			row.Received += s.RxPackets
			row.SentBytes += s.TxBytes
			row.ReceivedBytes += s.RxBytes
		}
		if err != nil {
			return fmt.Errorf("testpmd %d B: %w", size, err)
		}
	}
	return nil
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)

// runQEMU boots two guests on a and b; each pings the other Pings times
// at each of PingSizes; it calls collect before the guests stop.
func (r *Runner) runQEMU(ctx context.Context, dir string, row *Row, mark, collect func()) error {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()
	if r.Kernel == "" {
		return errors.New("no guest kernel")
	}
	sizes := r.PingSizes
	if sizes == nil {
		sizes = []int{56, 1400, 4000}
	}
	count := r.Pings
	if count == 0 {
		count = 3
	}
	type vm struct{ name, ip, mac, peer string }
	vms := []vm{
		{"a", "10.9.0.1", "52:54:00:00:00:01", "10.9.0.2"},
		{"b", "10.9.0.2", "52:54:00:00:00:02", "10.9.0.1"},
	}
	q := row.Combination.Queues()
	var extra []string
	if q > 1 {
		// Linux's virtio-net uses as many queue pairs as it has vCPUs.
		extra = []string{"-smp", strconv.Itoa(q)}
	}
	extraDev := ""
	if row.Combination.Packed {
		extraDev = "packed=on"
	}
	guests := make([]*qemu.Guest, len(vms))
	errs := make([]error, len(vms))
	var wg sync.WaitGroup
	for i, m := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			guests[i], errs[i] = qemu.Start(ctx, qemu.GuestConfig{
				Kernel: r.Kernel, Initrd: r.Initrd,
				Append:     "guestip=" + m.ip + "/24",
				NICs:       []qemu.NIC{{SocketPath: filepath.Join(dir, m.name+".sock"), MAC: m.mac, Queues: q, DeviceExtra: extraDev}},
				ConsoleLog: filepath.Join(dir, m.name+"-console.log"),
				ExtraArgs:  extra,
			})
		}()
	}
	wg.Wait()
	defer func() {
		for _, g := range guests {
			if g != nil {
				sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
				g.Shutdown(sctx)
				c()
			}
		}
	}()
	defer collect()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("boot guests: %w", err)
	}
	// The first reply (ARP, link up) is not counted.
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, code, err := guests[0].Run(ctx, "ping -c 1 -W 2 "+vms[0].peer)
		if err == nil && code == 0 {
			break
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("a: first ping: %w", err) // the guest is gone, not slow
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("no ping reply from b within 90s: %v %s; QEMU a: %s; QEMU b: %s", err, lastLines(out, 2),
				lastLines(guests[0].Stderr(), 2), lastLines(guests[1].Stderr(), 2))
		}
	}
	mark()
	for _, size := range sizes {
		for i, m := range vms {
			out, _, err := guests[i].Run(ctx, fmt.Sprintf("ping -c %d -s %d -W 5 %s", count, size, m.peer))
			if err != nil {
				return fmt.Errorf("%s: ping -s %d: %w", m.name, size, err)
			}
			s := pingStats.FindStringSubmatch(out)
			if s == nil {
				return fmt.Errorf("%s: ping -s %d: no statistics in %q", m.name, size, lastLines(out, 3))
			}
			tx, _ := strconv.ParseUint(s[1], 10, 64)
			rx, _ := strconv.ParseUint(s[2], 10, 64)
			row.Sent += tx
			row.Received += rx
		}
	}
	return nil
}

// daemon is a running vhostd.
type daemon struct {
	cmd  *exec.Cmd
	ctl  string
	log  string
	done chan error
}

// startVhostd runs vhostd with ports a and b in dir, both with
// disable=mask if mask is not empty, with one poller per queue pair, and
// waits for its control socket.
func startVhostd(ctx context.Context, bin, dir, mask string, queues int) (*daemon, error) {
	v := &daemon{ctl: filepath.Join(dir, "ctl.sock"), log: filepath.Join(dir, "vhostd.log"), done: make(chan error, 1)}
	args := []string{"--control", v.ctl}
	if queues > 1 {
		args = append(args, "--pollers", strconv.Itoa(queues))
	}
	for _, p := range []string{"a", "b"} {
		opt := p + "=" + filepath.Join(dir, p+".sock")
		if mask != "" {
			opt += ",disable=" + mask
		}
		args = append(args, "--socket", opt)
	}
	logf, err := os.Create(v.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	v.cmd = exec.Command(bin, args...)
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	if err := v.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start vhostd: %w", err)
	}
	go func() { v.done <- v.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ports []control.PortInfo
		if err := control.Call(ctx, v.ctl, control.CmdPorts, &ports); err == nil {
			return v, nil
		}
		select {
		case err := <-v.done:
			v.done <- err
			return nil, fmt.Errorf("vhostd exited at start: %v: %s", err, lastLines(v.Log(), 3))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			v.cmd.Process.Kill()
			<-v.done
			return nil, fmt.Errorf("vhostd control socket did not come up: %s", lastLines(v.Log(), 3))
		}
	}
}

// Log returns vhostd's output.
func (v *daemon) Log() string {
	b, _ := os.ReadFile(v.log)
	return string(b)
}

// drops reads vhostd's drop counters of ports a and b, added up.
func (v *daemon) drops(ctx context.Context, d *map[string]uint64) error {
	var stats []control.PortStats
	if err := control.Call(ctx, v.ctl, control.CmdStats, &stats); err != nil {
		return fmt.Errorf("vhostctl stats: %w", err)
	}
	for _, s := range stats {
		if s.Name == "a" || s.Name == "b" {
			AddDrops(d, s.Drops)
		}
	}
	return nil
}

// collect fills the row's acked features, counters and drops from the
// control socket; drops counted in before are the row's EarlyDrops.
func (v *daemon) collect(ctx context.Context, row *Row, before map[string]uint64) error {
	var ports []control.PortInfo
	if err := control.Call(ctx, v.ctl, control.CmdPorts, &ports); err != nil {
		return fmt.Errorf("vhostctl ports: %w", err)
	}
	for _, p := range ports {
		switch p.Name {
		case "a":
			row.Features, row.ProtocolFeatures = p.Vhost.Features, p.Vhost.ProtocolFeatures
		case "b":
			row.FeaturesB, row.ProtocolFeaturesB = p.Vhost.Features, p.Vhost.ProtocolFeatures
		default:
			continue
		}
		if i := slices.Index([]string{"a", "b"}, p.Name); i >= 0 {
			for _, rs := range p.Vhost.Rings {
				if rs.Running {
					row.RunningRings[i]++
				}
			}
		}
		for _, x := range p.Vhost.Violations {
			what, n := x.Kind, x.Count
			if what == "" {
				what, n = x.Request, 1
			}
			AddDrops(&row.Violations, map[string]uint64{p.Name + ":" + what: n})
		}
	}
	var stats []control.PortStats
	if err := control.Call(ctx, v.ctl, control.CmdStats, &stats); err != nil {
		return fmt.Errorf("vhostctl stats: %w", err)
	}
	for _, s := range stats {
		if s.Name != "a" && s.Name != "b" {
			continue
		}
		for _, qs := range s.Queues {
			n := qs.TxPackets
			if qs.Dir == "rx" {
				n = qs.RxPackets
			}
			if row.QueueFrames == nil {
				row.QueueFrames = map[string]uint64{}
			}
			row.QueueFrames[fmt.Sprintf("%s:%s%d", s.Name, qs.Dir, qs.Queue)] = n
		}
		row.VhostRx += s.RxPackets
		row.VhostTx += s.TxPackets
		row.VhostRxBytes += s.RxBytes
		row.VhostTxBytes += s.TxBytes
		AddDrops(&row.Drops, s.Drops)
	}
	for k, n := range before {
		if row.Drops == nil {
			break
		}
		row.Drops[k] -= n
		if row.Drops[k] == 0 {
			delete(row.Drops, k)
		}
	}
	row.EarlyDrops = before
	return nil
}

// stop ends vhostd with SIGTERM; an unclean exit, a panic or a data race
// in its log is an error.
func (v *daemon) stop() error {
	v.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-v.done:
	case <-time.After(30 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
		return errors.New("vhostd did not exit within 30s of SIGTERM")
	}
	log := v.Log()
	switch {
	case strings.Contains(log, "DATA RACE"):
		return errors.New("vhostd reported a data race: " + lastLines(log, 5))
	case strings.Contains(log, "panic:"):
		return errors.New("vhostd panicked: " + lastLines(log, 5))
	case err != nil:
		return fmt.Errorf("vhostd exited with %v after SIGTERM: %s", err, lastLines(log, 3))
	}
	return nil
}

// lastLines returns the last n non-empty lines of s, joined by " / ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}
