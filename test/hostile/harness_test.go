// Package hostile runs the real vhostd binary (built with -race) against
// frontends that misbehave on purpose: wrong kinds of fds, guest memory
// that vanishes, descriptor tables too big to walk, messages cut short,
// requests out of order. Each case then checks the rule every case shares:
// vhostd is still running and answering its control socket, a fresh pair
// of well-behaved frontends passes traffic, and once they leave vhostd's
// fd count is back where it was after startup. The tests need root; they
// fail, not skip, without it.
package hostile

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/test/binaries"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

var vhostdBin string

func TestMain(m *testing.M) {
	dir, err := binaries.Build("./daemon/cmd/vhostd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vhostdBin = filepath.Join(dir, "vhostd")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Features every frontend here asks for: VERSION_1 (12-byte header),
// PROTOCOL_FEATURES and INDIRECT_DESC; no EVENT_IDX and no MRG_RXBUF, so
// every used buffer wants a call and each frame takes one receive chain.
const (
	stdFeatures = vt.FeatureVersion1 | vt.FeatureProtocol | vt.FeatureIndirectDesc
	stdProtocol = vt.ProtocolReplyAck
	guestMem    = 40 << 20
)

// vhostd is a running daemon under test.
type vhostd struct {
	t       *testing.T
	cmd     *exec.Cmd
	Dir     string
	Control string
	logPath string
	done    chan error
	exited  bool
	exitErr error
	killed  bool // killed on purpose (SIGKILL): stop checks nothing
	// Ports are the port names in the order given; Socks their paths.
	Ports []string
	Socks map[string]string
	macs  map[string][6]byte
	// fdBase is vhostd's open fd count right after startup.
	fdBase int

	mu      sync.Mutex
	closers []func() // hostile resources, closed (last first) by finish
}

// port is one --socket of a daemon to start.
type port struct {
	Name string
	Opts string  // ",mode=0600", say: appended to the --socket flag
	MAC  [6]byte // the MAC fresh frontends on this port send from; zero: a default
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("hostile-frontend tests need root (they read /proc/PID/fd of vhostd and chown sockets)")
	}
}

// sockDir returns a short directory for sockets (sun_path is 108 bytes).
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "vh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// names is a shorthand for ports with default options.
func names(ns ...string) []port {
	var ps []port
	for _, n := range ns {
		ps = append(ps, port{Name: n})
	}
	return ps
}

// startVhostd runs vhostd with one --socket per port (NAME=DIR/NAME.sock
// plus the port's options), --control, --log-level debug and extra, its
// output going to a log file. It returns once the control socket answers,
// with the fd baseline taken. vhostd is stopped with SIGTERM at the end of
// the test, and must then exit 0 without a data race report.
func startVhostd(t *testing.T, ports []port, extra ...string) *vhostd {
	t.Helper()
	return startVhostdBin(t, vhostdBin, ports, extra...)
}

// startVhostdBin is startVhostd with the vhostd binary bin.
func startVhostdBin(t *testing.T, bin string, ports []port, extra ...string) *vhostd {
	t.Helper()
	requireRoot(t)
	dir := sockDir(t)
	v := &vhostd{t: t, Dir: dir, Control: filepath.Join(dir, "ctl.sock"), done: make(chan error, 1),
		Socks: map[string]string{}, macs: map[string][6]byte{}}
	v.logPath = filepath.Join(t.TempDir(), "vhostd.log")
	logf, err := os.Create(v.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--control", v.Control, "--log-level", "debug"}
	for i, p := range ports {
		path := filepath.Join(dir, p.Name+".sock")
		args = append(args, "--socket", p.Name+"="+path+p.Opts)
		v.Ports = append(v.Ports, p.Name)
		v.Socks[p.Name] = path
		mac := p.MAC
		if mac == ([6]byte{}) {
			mac = [6]byte{0x02, 0, 0, 0, 0x01, byte(0x10 + i)}
		}
		v.macs[p.Name] = mac
	}
	args = append(args, extra...)
	v.cmd = exec.Command(bin, args...)
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	go func() { v.done <- v.cmd.Wait() }()
	t.Cleanup(v.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := v.portsErr(time.Second); err == nil {
			break
		}
		if v.hasExited() {
			first, _, _ := strings.Cut(strings.TrimSpace(v.Log()), "\n")
			t.Fatalf("vhostd exited at start (%v): %s\nargs %q\n%s", v.exitErr, first, args, v.Log())
		}
		if time.Now().After(deadline) {
			t.Fatalf("vhostd control socket did not come up\n%s", v.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The control connection just used is closed on vhostd's side
	// asynchronously: take the baseline once the count is steady.
	v.fdBase = v.steadyFDs()
	return v
}

// hasExited reports whether vhostd has exited (recording how).
func (v *vhostd) hasExited() bool {
	if v.exited {
		return true
	}
	select {
	case err := <-v.done:
		v.exited, v.exitErr = true, err
		return true
	default:
		return false
	}
}

// Log returns vhostd's output so far.
func (v *vhostd) Log() string {
	b, _ := os.ReadFile(v.logPath)
	return string(b)
}

// LogSince returns vhostd's output after the first n bytes (n from a
// previous len(v.Log())).
func (v *vhostd) LogSince(n int) string {
	s := v.Log()
	if n > len(s) {
		return ""
	}
	return s[n:]
}

// waitLog waits up to timeout for vhostd's log after offset n to satisfy
// ok, and returns that part of the log.
func (v *vhostd) waitLog(n int, timeout time.Duration, ok func(string) bool) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		s := v.LogSince(n)
		if ok(s) {
			return s, true
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and checks vhostd exits 0 within 15 s, removes its
// sockets and reported no data race.
func (v *vhostd) stop() {
	t := v.t
	if v.killed {
		return
	}
	if !v.hasExited() {
		v.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-v.done:
			v.exited, v.exitErr = true, err
			if err != nil {
				t.Errorf("vhostd exited with %v after SIGTERM\n%s", err, tail(v.Log(), 4000))
			}
		case <-time.After(15 * time.Second):
			v.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into the log
			time.Sleep(time.Second)
			v.cmd.Process.Kill()
			<-v.done
			v.exited = true
			t.Errorf("vhostd did not exit within 15s of SIGTERM\n%s", tail(v.Log(), 8000))
		}
	} else {
		t.Errorf("vhostd had already exited (%v) before the end of the test\n%s", v.exitErr, tail(v.Log(), 4000))
	}
	if strings.Contains(v.Log(), "WARNING: DATA RACE") {
		t.Errorf("vhostd reported a data race:\n%s", v.Log())
	}
	ents, _ := os.ReadDir(v.Dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sock") {
			t.Errorf("vhostd left %s behind", e.Name())
		}
	}
	if t.Failed() {
		t.Logf("vhostd log (tail):\n%s", tail(v.Log(), 3000))
	}
	if c := crash(v.Log()); c != "" {
		first, rest, _ := strings.Cut(c, "\n")
		t.Logf("vhostd crashed: %s\n%s", first, rest)
	}
}

// crash returns the start of a Go crash report in log, or "".
func crash(log string) string {
	i := -1
	for _, m := range []string{"unexpected fault address", "fatal error:", "\npanic: ", "WARNING: DATA RACE"} {
		if j := strings.Index(log, m); j >= 0 && (i < 0 || j < i) {
			i = j
		}
	}
	if i < 0 {
		return ""
	}
	s := log[i:]
	if len(s) > 2500 {
		s = s[:2500] + "..."
	}
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// track registers a hostile resource for finish to close.
func (v *vhostd) track(f func()) {
	v.mu.Lock()
	v.closers = append(v.closers, f)
	v.mu.Unlock()
}

// closeTracked closes the hostile resources, last first.
func (v *vhostd) closeTracked() {
	v.mu.Lock()
	cs := v.closers
	v.closers = nil
	v.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// dial connects a raw frontend to port name, tracked for finish.
func (v *vhostd) dial(t *testing.T, name string) *vt.Frontend {
	t.Helper()
	f, err := vt.Dial(v.Socks[name], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	v.track(f.Close)
	return f
}

// guest connects a well-behaved guest to port name (tracked for finish).
func (v *vhostd) guest(t *testing.T, name string, memSize int, features, protocol uint64) *vt.Guest {
	t.Helper()
	g, err := vt.DialGuest(v.Socks[name], memSize, features, protocol)
	if err != nil {
		t.Fatalf("guest on %s: %v\n%s", name, err, tail(v.Log(), 3000))
	}
	v.track(g.Close)
	return g
}

// PID returns vhostd's process id.
func (v *vhostd) PID() int { return v.cmd.Process.Pid }

// openFDs returns the number of entries in /proc/PID/fd.
func openFDs(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// fdList describes vhostd's open fds, for a failure message.
func fdList(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(dir + "/" + e.Name())
		out = append(out, e.Name()+"->"+l)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// steadyFDs waits (up to 2 s) for vhostd's fd count to stay unchanged for
// 100 ms and returns it.
func (v *vhostd) steadyFDs() int {
	n := openFDs(v.PID())
	stable := time.Now()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		m := openFDs(v.PID())
		if m != n {
			n, stable = m, time.Now()
		} else if time.Since(stable) >= 100*time.Millisecond {
			break
		}
	}
	return n
}

// waitFDs polls up to 2 s for vhostd's fd count to be back at the
// baseline and returns the last count.
func (v *vhostd) waitFDs() int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := openFDs(v.PID())
		if n == v.fdBase || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call runs one control command with a timeout.
func (v *vhostd) call(command string, timeout time.Duration, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return control.Call(ctx, v.Control, command, out)
}

func (v *vhostd) portsErr(timeout time.Duration) (map[string]control.PortInfo, error) {
	var ps []control.PortInfo
	if err := v.call("ports", timeout, &ps); err != nil {
		return nil, err
	}
	out := map[string]control.PortInfo{}
	for _, p := range ps {
		out[p.Name] = p
	}
	return out, nil
}

// ports returns `ports` by name; it fails the test when vhostd does not
// answer within 2 s.
func (v *vhostd) ports(t *testing.T) map[string]control.PortInfo {
	t.Helper()
	ps, err := v.portsErr(2 * time.Second)
	if err != nil {
		t.Fatalf("control socket: ports: %v", err)
	}
	return ps
}

func (v *vhostd) stats(t *testing.T) map[string]control.PortStats {
	t.Helper()
	var st []control.PortStats
	if err := v.call("stats", 2*time.Second, &st); err != nil {
		t.Fatalf("control socket: stats: %v", err)
	}
	out := map[string]control.PortStats{}
	for _, s := range st {
		out[s.Name] = s
	}
	return out
}

func (v *vhostd) fdb(t *testing.T) []control.FDBEntry {
	t.Helper()
	var es []control.FDBEntry
	if err := v.call("fdb", 2*time.Second, &es); err != nil {
		t.Fatalf("control socket: fdb: %v", err)
	}
	return es
}

// mac returns the MAC fresh frontends on port name send from.
func (v *vhostd) mac(name string) [6]byte { return v.macs[name] }

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// freshTraffic connects a correct frontend to port pa and another to pb;
// b posts receive buffers and announces its MAC with a broadcast, a sends
// three frames addressed to b's MAC, and it waits (up to 5 s) until b's
// receive ring holds them, byte for byte. It returns the time from the
// first connect to the last frame's arrival, and closes both frontends.
func freshTraffic(t *testing.T, v *vhostd, pa, pb string) (time.Duration, error) {
	start := time.Now()
	a, err := vt.DialGuest(v.Socks[pa], guestMem, stdFeatures, stdProtocol)
	if err != nil {
		return 0, fmt.Errorf("fresh frontend on %s: %w", pa, err)
	}
	defer a.Close()
	b, err := vt.DialGuest(v.Socks[pb], guestMem, stdFeatures, stdProtocol)
	if err != nil {
		return 0, fmt.Errorf("fresh frontend on %s: %w", pb, err)
	}
	defer b.Close()
	b.PostRX(64, 2048)
	a.PostRX(64, 2048) // for b's broadcast; not checked
	b.Send(vt.Frame(broadcast, v.mac(pb), 0, 60))
	var want [][]byte
	for i := 1; i <= 3; i++ {
		want = append(want, vt.Frame(v.mac(pb), v.mac(pa), i, 60+100*i))
	}
	// Let the switch learn b before a's unicast; flooding would deliver
	// them too, so this only makes the check stricter, never flakier.
	time.Sleep(20 * time.Millisecond)
	a.Send(want...)
	var got [][]byte
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, fr := range b.Received() {
			if len(fr) >= 14 && [6]byte(fr[6:12]) == v.mac(pa) {
				got = append(got, fr)
			}
		}
		if len(got) >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("fresh frontend on %s received %d of %d frames from %s within 5s", pb, len(got), len(want), pa)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			return elapsed, fmt.Errorf("frame %d from %s to %s arrived as %x, want %x", i, pa, pb, got[i], want[i])
		}
	}
	return elapsed, nil
}

// alive reports whether vhostd runs and answers `ports` within 2 s.
func (v *vhostd) alive() error {
	if v.hasExited() {
		return fmt.Errorf("vhostd exited: %v", v.exitErr)
	}
	if err := syscall.Kill(v.PID(), 0); err != nil {
		return fmt.Errorf("vhostd process: %w", err)
	}
	start := time.Now()
	if _, err := v.portsErr(2 * time.Second); err != nil {
		return fmt.Errorf("control socket does not answer ports within 2s (%v): %w", time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}

// finish checks the rule every case ends with, after closing the case's
// hostile frontends: vhostd is running and answers `ports`, fresh
// frontends on pa and pb pass traffic, and once they have closed vhostd's
// fd count is back at its value after startup. It logs the line the issue
// note quotes. Call it deferred, so it runs after a failed assertion too;
// it reports with Errorf only.
func (v *vhostd) finish(t *testing.T, name, pa, pb string) {
	// Not a t.Helper: run deferred after a t.Fatal, its lines would be
	// attributed to the runtime's panic.go, which make e2e filters out.
	v.closeTracked()
	if err := v.alive(); err != nil {
		t.Errorf("case %s: %v\n%s", name, err, tail(v.Log(), 4000))
		t.Logf("case %s: fd count before=%d after=-, fresh frontend got traffic in - (vhostd not running)", name, v.fdBase)
		return
	}
	// Let vhostd see the hostile frontends go (immediate reconnect is case
	// 5's business, not every case's).
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var busy []string
		if ps, err := v.portsErr(2 * time.Second); err == nil {
			for name, p := range ps {
				if p.Vhost.Connected {
					busy = append(busy, name)
				}
			}
		}
		if len(busy) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("case %s: ports %v still connected 3s after their frontends closed", name, busy)
			break
		}
	}
	elapsed, err := freshTraffic(t, v, pa, pb)
	traffic := elapsed.Round(time.Millisecond).String()
	if err != nil {
		t.Errorf("case %s: %v", name, err)
		traffic = "- (" + err.Error() + ")"
	}
	after := v.waitFDs()
	if after != v.fdBase {
		t.Errorf("case %s: vhostd has %d fds open after the fresh frontends left, %d after startup: %s", name, after, v.fdBase, fdList(v.PID()))
	}
	if err := v.alive(); err != nil {
		t.Errorf("case %s: after fresh traffic: %v", name, err)
	}
	t.Logf("case %s: fd count before=%d after=%d, fresh frontend got traffic in %s", name, v.fdBase, after, traffic)
}

// TestHarness checks the harness itself on a daemon nobody attacks.
func TestHarness(t *testing.T) {
	v := startVhostd(t, names("a", "b"))
	defer v.finish(t, "harness", "a", "b")
	if ps := v.ports(t); len(ps) != 2 {
		t.Fatalf("ports: %v", ps)
	}
}
