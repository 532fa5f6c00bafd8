package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/test/testpmd"
)

// TestVhostdRefusesBadInput checks that bad flags and configs give a
// non-zero exit and a message that says what to fix.
func TestVhostdRefusesBadInput(t *testing.T) {
	dir := sockDir(t)
	cfg := filepath.Join(dir, "bad.toml")
	os.WriteFile(cfg, []byte("pollerz = 3\n"), 0o644)
	notSock := filepath.Join(dir, "file.sock")
	os.WriteFile(notSock, nil, 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "no ports"},
		{[]string{"--socket", "vm=" + dir + "/a.sock,disable=tso"}, "unknown feature \"tso\""},
		{[]string{"--socket", "vm=" + dir + "/a.sock", "--socket", "vm=" + dir + "/b.sock"}, "port name \"vm\" used twice"},
		{[]string{"--config", cfg}, "unknown keys pollerz"},
		{[]string{"--config", dir + "/missing.toml"}, "no such file"},
		{[]string{"--socket", dir + "/a.sock", "--log-level", "loud"}, "log level \"loud\""},
		{[]string{"--socket", notSock}, "not a socket"},
		{[]string{"--socket", dir + "/a.sock", "stray"}, "unexpected arguments"},
		{[]string{"--socket", dir + "/a.sock,mode=0999"}, `port "a": mode "0999" is not an octal mode`},
		{[]string{"--socket", dir + "/a.sock", "--socket-group", "no-such-group"}, `socket_group (--socket-group) "no-such-group": no such group`},
		{[]string{"--socket", dir + "/a.sock,mac=ff:ff:ff:ff:ff:ff"}, "multicast"},
		{[]string{"--socket", dir + "/a.sock,client,owner=root"}, `port "a": owner, group and mode set the permissions of a socket vhostd creates; a client port connects`},
		{[]string{"--socket", dir + "/a.sock,client=yes"}, `unknown option "client=yes"`},
		{[]string{"--socket", dir + "/a.sock", "--poller-cpus", "1023"}, `poller_cpus "1023": CPU 1023 is not one vhostd may run on (allowed: `},
		{[]string{"--socket", dir + "/a.sock", "--pollers", "2", "--poller-cpus", "1"}, `poller_cpus = "1" names 1 CPU for 2 pollers: name one CPU per poller, or set pollers = 1`},
		{[]string{"--socket", dir + "/a.sock", "--poller-cpus", "3-1"}, `CPU range "3-1" goes down`},
	}
	for _, c := range cases {
		out, err := exec.Command(vhostdBin, append([]string{"--control", dir + "/ctl.sock"}, c.args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("vhostd %v exited 0", c.args)
			continue
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("vhostd %v: output %q does not contain %q", c.args, out, c.want)
		}
	}
}

// TestSocketFiles checks socket file handling: a stale socket is replaced,
// a served one is refused, a missing directory is created.
func TestSocketFiles(t *testing.T) {
	dir := sockDir(t)
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the file stays, nobody listens: as after a kill -9
	v := startVhostd(t, dir, "--socket", "a="+stale, "--socket", "b="+filepath.Join(dir, "sub", "dir", "b.sock"))
	if _, err := os.Stat(filepath.Join(dir, "sub", "dir", "b.sock")); err != nil {
		t.Fatalf("socket in a new directory: %v", err)
	}
	out, err := exec.Command(vhostdBin, "--control", filepath.Join(dir, "ctl2.sock"), "--socket", stale).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another process is serving it") {
		t.Fatalf("second vhostd on a served socket: %v %s", err, out)
	}
	out, err = exec.Command(vhostdBin, "--control", v.Control, "--socket", filepath.Join(dir, "c.sock")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another vhostd is using it") {
		t.Fatalf("second vhostd on a served control socket: %v %s", err, out)
	}
	// The failed starts removed what they created.
	if _, err := os.Stat(filepath.Join(dir, "c.sock")); err == nil {
		t.Fatal("failed vhostd left its socket behind")
	}
	v.stop()
	os.RemoveAll(filepath.Join(dir, "sub"))
}

// vhostctl runs vhostctl against v and returns its output.
func vhostctl(t *testing.T, v *vhostd, args ...string) string {
	t.Helper()
	out, err := exec.Command(vhostctlBin, append([]string{"--control", v.Control}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("vhostctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestVhostctlWithoutDaemon(t *testing.T) {
	out, err := exec.Command(vhostctlBin, "--control", "/nonexistent/ctl.sock", "ports").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is vhostd running?") {
		t.Fatalf("vhostctl without vhostd: %v %s", err, out)
	}
	out, err = exec.Command(vhostctlBin, "frobnicate").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown command") {
		t.Fatalf("vhostctl frobnicate: %v %s", err, out)
	}
}

// TestHelp: asking either binary or a vhostctl command for its usage
// prints it and exits 0 (scripts check the status), naming the flags the
// README documents.
func TestHelp(t *testing.T) {
	for _, c := range []struct {
		bin  string
		args []string
		want []string
	}{
		{vhostdBin, []string{"--help"}, []string{"--mtu N", "--uplink-mtu N", "--poller-cpus LIST"}},
		{vhostctlBin, []string{"--help"}, []string{"add-port", "[--mtu N]", "detach --qmp", "[--timeout DUR]"}},
		{vhostctlBin, []string{"add-port", "-h"}, []string{"-max-macs", "-mtu", "(default 8)"}},
		{vhostctlBin, []string{"attach", "--help"}, []string{"-timeout"}},
	} {
		out, err := exec.Command(c.bin, c.args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %v: %v (want exit status 0)\n%s", filepath.Base(c.bin), c.args, err, out)
		}
		for _, w := range c.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s %v does not mention %q:\n%s", filepath.Base(c.bin), c.args, w, out)
			}
		}
	}
}

// checkVhostctl checks vhostctl's views of a daemon whose ports a and b
// carried traffic from macA and macB.
func checkVhostctl(t *testing.T, v *vhostd) {
	t.Helper()
	ports := vhostctl(t, v, "ports")
	for _, want := range []string{"PORT", "a  ", "running", "0:256", "version_1", "reply_ack"} {
		if !strings.Contains(ports, want) {
			t.Errorf("vhostctl ports lacks %q:\n%s", want, ports)
		}
	}
	fdb := vhostctl(t, v, "fdb")
	for _, want := range []string{macA + "  a", macB + "  b"} {
		if !strings.Contains(fdb, want) {
			t.Errorf("vhostctl fdb lacks %q:\n%s", want, fdb)
		}
	}
	var stats []control.PortStats
	if err := json.Unmarshal([]byte(vhostctl(t, v, "stats", "--json")), &stats); err != nil {
		t.Fatalf("vhostctl stats --json: %v", err)
	}
	direct := v.stats(t)
	if len(stats) != 2 || stats[0].RxPackets != direct[stats[0].Name].RxPackets || stats[0].RxPackets == 0 {
		t.Errorf("vhostctl stats --json = %+v, control socket says %+v", stats, direct)
	}
	if text := vhostctl(t, v, "stats"); !strings.Contains(text, "RX-PKTS") {
		t.Errorf("vhostctl stats:\n%s", text)
	}
}

// TestVhostctlStatsWatch runs `vhostctl stats --watch` against a real
// vhostd with output that is not a terminal: one timestamped block per
// refresh, rates over the measured time, no escape codes; with --json one
// object a line.
func TestVhostctlStatsWatch(t *testing.T) {
	dir := sockDir(t)
	v := startVhostd(t, dir, "--socket", "a="+filepath.Join(dir, "a.sock"), "--socket", "b="+filepath.Join(dir, "b.sock"))
	start := time.Now()
	out := vhostctl(t, v, "stats", "--watch", "--interval", "200ms", "--count", "2")
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("2 refreshes 200ms apart took %s", took)
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("escape codes in output that is not a terminal: %q", out)
	}
	header := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)  every 200ms, measured over (\d+)ms$`)
	blocks := strings.Split(strings.TrimSuffix(out, "\n\n"), "\n\n")
	if len(blocks) != 2 {
		t.Fatalf("%d blocks, want 2:\n%s", len(blocks), out)
	}
	for _, b := range blocks {
		lines := strings.Split(b, "\n")
		m := header.FindStringSubmatch(lines[0])
		if m == nil {
			t.Errorf("header %q", lines[0])
		} else if ms, _ := strconv.Atoi(m[2]); ms < 150 || ms > 2000 {
			t.Errorf("measured over %sms, polls 200ms apart", m[2])
		}
		want := []string{
			"PORT  RX-PKTS/S  TX-PKTS/S    RX-BITS/S    TX-BITS/S  DROPS/S  TOP-DROP",
			"a             0          0        0 b/s        0 b/s        0  -",
			"b             0          0        0 b/s        0 b/s        0  -",
		}
		// Then the pollers' load: a header and one line for the poller.
		if len(lines) != 6 || strings.Join(lines[1:4], "\n") != strings.Join(want, "\n") ||
			!strings.HasPrefix(lines[4], "POLLER  BUSY%  FRAMES/S  CYCLES/FRAME  PREEMPTED/S  PORTS") || !strings.HasSuffix(lines[5], "  a,b") {
			t.Errorf("block\n%s\nwant a header line then\n%s\nthen the pollers", b, strings.Join(want, "\n"))
		}
	}

	out = vhostctl(t, v, "stats", "--watch", "--json", "--interval", "100ms", "--count", "1")
	var rec struct {
		Time    time.Time `json:"time"`
		Elapsed float64   `json:"elapsed_sec"`
		Ports   []struct {
			Name   string  `json:"name"`
			Status string  `json:"status"`
			RxPPS  float64 `json:"rx_packets_per_sec"`
		} `json:"ports"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("stats --watch --json: %v\n%s", err, out)
	}
	if len(rec.Ports) != 2 || rec.Ports[0].Name != "a" || rec.Ports[0].Status != "ok" || rec.Elapsed <= 0 || time.Since(rec.Time) > time.Minute {
		t.Errorf("stats --watch --json: %+v", rec)
	}

	if out, err := exec.Command(vhostctlBin, "--control", v.Control, "stats", "--watch", "--interval", "10ms").CombinedOutput(); err == nil || !strings.Contains(string(out), "too short") {
		t.Errorf("--interval 10ms: %v %s", err, out)
	}
}

// TestVhostctlStatsWatchTraffic watches the rates of a closed loop of
// dpdk-testpmd traffic through a and b: both ways, on both ports, with
// bits per second that fit the frames' size.
func TestVhostctlStatsWatchTraffic(t *testing.T) {
	requirePeer(t, testpmd.DefaultBinary)
	dir := sockDir(t)
	v := startVhostd(t, dir, "--socket", "a="+filepath.Join(dir, "a.sock"), "--socket", "b="+filepath.Join(dir, "b.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp, err := testpmd.Start(ctx, testpmd.Config{
		Ports: []testpmd.Port{
			{Socket: filepath.Join(dir, "a.sock"), MAC: macA},
			{Socket: filepath.Join(dir, "b.sock"), MAC: macB},
		},
		PeerMACs: []string{macB, macA},
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(v.Log(), 3000))
	}
	defer tp.Close()
	if err := tp.WaitLinksUp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tp.StartClosedLoop(ctx, 4); err != nil {
		t.Fatal(err)
	}
	out := vhostctl(t, v, "stats", "--watch", "--json", "--interval", "200ms", "--count", "2")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), out)
	}
	for _, l := range lines {
		var rec struct {
			Ports []struct {
				Name   string  `json:"name"`
				Status string  `json:"status"`
				RxPPS  float64 `json:"rx_packets_per_sec"`
				TxPPS  float64 `json:"tx_packets_per_sec"`
				RxBPS  float64 `json:"rx_bits_per_sec"`
				TxBPS  float64 `json:"tx_bits_per_sec"`
			} `json:"ports"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil || len(rec.Ports) != 2 {
			t.Fatalf("line %q: %v", l, err)
		}
		for _, p := range rec.Ports {
			if p.Status != "ok" || p.RxPPS < 1000 || p.TxPPS < 1000 || p.RxBPS < 8*60*p.RxPPS || p.RxBPS > 8*1600*p.RxPPS || p.TxBPS < 8*60*p.TxPPS {
				t.Errorf("port %s under a closed loop: %+v", p.Name, p)
			}
		}
	}
	text := vhostctl(t, v, "stats", "--watch", "--interval", "200ms", "--count", "1")
	if !regexp.MustCompile(`(?m)^a +\d+ +\d+ +[\d.]+ [KMG]b/s +[\d.]+ [KMG]b/s +`).MatchString(text) {
		t.Errorf("stats --watch under a closed loop:\n%s", text)
	}
	t.Logf("stats --watch under a closed loop:\n%s", text)
}

// TestVhostctlStatsWatchPortChanges watches a vhostd while a port is
// deleted and added again: the port is reported gone, then new; Ctrl-C
// (SIGINT) ends the watch with status 0.
func TestVhostctlStatsWatchPortChanges(t *testing.T) {
	dir := sockDir(t)
	v := startVhostd(t, dir, "--socket", "a="+filepath.Join(dir, "a.sock"), "--socket", "b="+filepath.Join(dir, "b.sock"))
	cmd := exec.Command(vhostctlBin, "--control", v.Control, "stats", "--watch", "--interval", "200ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer watchdog.Stop()
	r := bufio.NewReader(stdout)
	// until reads refreshes until one contains want.
	until := func(want string) string {
		t.Helper()
		var seen []string
		for range 10 {
			var block strings.Builder
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("watch output ended (%v) waiting for %q:\n%s%s", err, want, strings.Join(seen, ""), block.String())
				}
				block.WriteString(line)
				if line == "\n" {
					break
				}
			}
			if strings.Contains(block.String(), want) {
				return block.String()
			}
			seen = append(seen, block.String())
		}
		t.Fatalf("no refresh with %q in:\n%s", want, strings.Join(seen, ""))
		return ""
	}
	until("\nb             0")
	vhostctl(t, v, "del-port", "b")
	if b := until("b: gone since the previous refresh"); strings.Contains(b, "\nb ") {
		t.Errorf("port b deleted, still in the table:\n%s", b)
	}
	vhostctl(t, v, "add-port", "b", "--socket", filepath.Join(dir, "b2.sock"))
	until("\nb             -          -            -            -        -  (new port: rates from the next refresh)")
	until("\nb             0          0        0 b/s        0 b/s        0  -")
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("vhostctl stats --watch after SIGINT: %v", err)
	}
}
