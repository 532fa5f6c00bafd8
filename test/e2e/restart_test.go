package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/testpmd"
)

// waitForwarding polls vhostd's counters until it has delivered a frame
// to a port (to each of ports, if given), and returns how long after the
// process started that was seen (an upper bound: the poll's resolution is
// about a millisecond plus the control socket's round trip).
func waitForwarding(t *testing.T, v *vhostd, within time.Duration, ports ...string) time.Duration {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var st []control.PortStats
		if err := control.Call(context.Background(), v.Control, "stats", &st); err == nil {
			delivered := map[string]bool{}
			for _, s := range st {
				if s.TxPackets > 0 {
					delivered[s.Name] = true
				}
			}
			all := len(delivered) > 0
			for _, p := range ports {
				all = all && delivered[p]
			}
			if all {
				return time.Since(v.Started)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("vhostd forwarded no frame within %v of its start\n%s", within, tail(v.Log(), 3000))
		}
		time.Sleep(time.Millisecond)
	}
}

// flowing reports whether both ports delivered frames over the next
// window: a closed loop keeps going in each direction only while frames
// circle in it.
func flowing(t *testing.T, v *vhostd, window time.Duration) bool {
	t.Helper()
	a := v.stats(t)
	time.Sleep(window)
	b := v.stats(t)
	return b["a"].TxPackets > a["a"].TxPackets && b["b"].TxPackets > a["b"].TxPackets
}

// withoutDebug returns log without its debug lines.
func withoutDebug(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "level=debug") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestClientModeRestartTestpmd runs vhostd in client mode against DPDK's
// virtio_user as the socket server (testpmd server=1 vdevs): a fixed
// count each way matches exactly; then, with testpmd's closed loop
// running, vhostd is killed with SIGKILL and started again three times.
// Each time the new vhostd connects at once and forwards within 1 s of its
// start, and within 0.5 s in the median of the three. After the last
// restart the counters of testpmd and of the new vhostd agree: every frame vhostd delivered testpmd received, and
// vhostd read from each port what testpmd sent since the kill plus what
// was still queued in the port's transmit ring at the kill (at most a
// ring's worth); the frames vhostd lost are counted as drops.
func TestClientModeRestartTestpmd(t *testing.T) {
	requirePeer(t, testpmd.DefaultBinary)
	dir := sockDir(t)
	// The frontend's sockets live apart from vhostd's directory (which
	// vhostd must leave empty of sockets when it stops).
	fe := sockDir(t)
	args := []string{"--socket", "a=" + filepath.Join(fe, "a.sock") + ",client", "--socket", "b=" + filepath.Join(fe, "b.sock") + ",client"}
	v := startVhostd(t, dir, args...)
	// No frontend yet: vhostd keeps trying, and says so.
	deadline := time.Now().Add(5 * time.Second)
	for v.ports(t)["a"].Vhost.Attempts < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if p := v.ports(t)["a"]; p.State != "connecting" || p.Vhost.Mode != "client" || p.Vhost.Attempts < 2 || !strings.Contains(p.Vhost.LastError, "no such file") {
		t.Errorf("port a before the frontend is up: state %s mode %s attempts %d last error %q", p.State, p.Vhost.Mode, p.Vhost.Attempts, p.Vhost.LastError)
	}
	text := vhostctl(t, v, "ports")
	for _, want := range []string{"connecting", "a.sock (client)", "a: connecting to " + filepath.Join(fe, "a.sock") + ": ", " attempts, the last ", "no such file or directory"} {
		if !strings.Contains(text, want) {
			t.Errorf("vhostctl ports lacks %q:\n%s", want, text)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tp := v.startTestpmd(t, ctx, testpmd.Config{
		Ports: []testpmd.Port{
			{Socket: filepath.Join(fe, "a.sock"), MAC: macA, Server: true},
			{Socket: filepath.Join(fe, "b.sock"), MAC: macB, Server: true},
		},
		PeerMACs: []string{macB, macA},
		TxPkts:   60,
	})
	const perPort = 5000
	st, err := tp.SendExact(ctx, perPort, testpmd.SendOptions{})
	if err != nil {
		t.Fatalf("send: %v\nvhostd log:\n%s", err, tail(v.Log(), 3000))
	}
	for i, s := range st {
		if s.TxPackets != perPort || s.RxPackets != perPort {
			t.Errorf("testpmd port %d: tx %d rx %d, want %d each way", i, s.TxPackets, s.RxPackets, perPort)
		}
	}
	v.matchTestpmd(t, []string{"a", "b"}, st)
	ports := v.ports(t)
	for _, name := range []string{"a", "b"} {
		if p := ports[name]; p.State != "running" || p.Vhost.Mode != "client" || !p.Vhost.Connected {
			t.Errorf("port %s: state %s mode %s connected %v", name, p.State, p.Vhost.Mode, p.Vhost.Connected)
		}
	}

	// Under load: the closed loop.
	if err := tp.StartClosedLoop(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if !flowing(t, v, 300*time.Millisecond) {
		t.Fatalf("closed loop not flowing both ways\n%s", tail(v.Log(), 2000))
	}
	const restarts = 3
	var times []time.Duration
	var atKill []testpmd.PortStats
	for n := 1; n <= restarts; n++ {
		v.kill(t)
		// testpmd drains what the dead vhostd delivered and queues what it
		// forwards into the transmit rings; then nothing moves.
		time.Sleep(200 * time.Millisecond)
		if atKill, err = tp.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		v = startVhostd(t, dir, args...)
		up := time.Since(v.Started)
		d := waitForwarding(t, v, 10*time.Second)
		times = append(times, d)
		t.Logf("restart %d: first frame after %d ms (control socket up after %d ms)", n, d.Milliseconds(), up.Milliseconds())
		// One restart may be slow for reasons not vhostd's own: the
		// -race build starts slower and testpmd's pollers hold the
		// CPUs (on CI one took 511 ms, its control socket up after
		// 330 ms); the median below holds the 0.5 s.
		if d > time.Second {
			t.Errorf("restart %d: first frame %v after vhostd's start, want within 1s", n, d)
		}
		// Frames in flight at the kill or that met a port not yet set up
		// are lost; if one direction lost all its frames, seed it again.
		if !flowing(t, v, 300*time.Millisecond) {
			t.Logf("restart %d: the closed loop lost its frames in a direction; seeding it again", n)
			if _, err := tp.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tp.StartTxFirst(ctx, 4); err != nil {
				t.Fatal(err)
			}
			if !flowing(t, v, 300*time.Millisecond) {
				t.Fatalf("restart %d: no traffic both ways after seeding again\n%s", n, tail(v.Log(), 3000))
			}
		}
	}
	t.Logf("restarts: first frame after %v (median %d ms) of vhostd's start (vhostd built with -race)", times, median(times).Milliseconds())
	if m := median(times); m > 500*time.Millisecond {
		t.Errorf("restarts: median first frame %v after vhostd's start, want within 500ms", m)
	}

	// Stop the load: no more transmits; vhostd drains the transmit
	// rings; "start" then flushes (counts) what waits in the receive
	// rings, and nothing circles any more.
	if _, err := tp.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := tp.StartFwd(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := tp.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	end, err := tp.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vs := v.stats(t)
	var rx, tx, drops uint64
	for i, name := range []string{"a", "b"} {
		s := vs[name]
		rx, tx, drops = rx+s.RxPackets, tx+s.TxPackets, drops+totalDrops(s)
		sent, got := end[i].TxPackets-atKill[i].TxPackets, end[i].RxPackets-atKill[i].RxPackets
		queued := int64(s.RxPackets) - int64(sent)
		t.Logf("port %s since the last kill: testpmd sent %d received %d; vhostd rx %d tx %d drops %v; queued at the kill: %d",
			name, sent, got, s.RxPackets, s.TxPackets, s.Drops, queued)
		if got != s.TxPackets {
			t.Errorf("port %s: vhostd delivered %d frames, testpmd received %d", name, s.TxPackets, got)
		}
		if queued < 0 || queued > 256 {
			t.Errorf("port %s: vhostd read %d frames, testpmd sent %d since the kill: the difference is not what a 256-entry transmit ring held", name, s.RxPackets, sent)
		}
	}
	if rx != tx+drops {
		t.Errorf("vhostd received %d frames, delivered %d and counted %d dropped: %d unaccounted", rx, tx, drops, int64(rx)-int64(tx+drops))
	}
	t.Logf("frames vhostd lost at the last restart (counted as drops): %d", drops)

	// And exact again, on the restarted vhostd.
	before := v.stats(t)
	st, err = tp.SendExact(ctx, 1000, testpmd.SendOptions{})
	if err != nil {
		t.Fatalf("send after the restarts: %v\n%s", err, tail(v.Log(), 3000))
	}
	after := v.stats(t)
	for i, name := range []string{"a", "b"} {
		r := after[name].RxPackets - before[name].RxPackets
		x := after[name].TxPackets - before[name].TxPackets
		if st[i].TxPackets != 1000 || st[i].RxPackets != 1000 || r != 1000 || x != 1000 || totalDrops(after[name]) != totalDrops(before[name]) {
			t.Errorf("port %s after the restarts: testpmd tx %d rx %d, vhostd rx %d tx %d, want 1000 each", name, st[i].TxPackets, st[i].RxPackets, r, x)
		}
	}
	if t.Failed() {
		t.Logf("vhostd log:\n%s", tail(v.Log(), 4000))
	}
}

var pingReply = regexp.MustCompile(`(?m)^\d+ bytes from [0-9.]+: seq=(\d+) ttl=\d+ time=([0-9.]+) ms`)

// guestUptime reads the guest's /proc/uptime.
func guestUptime(t *testing.T, ctx context.Context, g *qemu.Guest) float64 {
	t.Helper()
	out := guestRun(t, ctx, g, "cat /proc/uptime")
	var up float64
	if _, err := fmt.Sscanf(out, "%f", &up); err != nil {
		t.Fatalf("guest /proc/uptime %q: %v", out, err)
	}
	return up
}

// TestRestartQEMU restarts vhostd under two QEMU guests, in each mode.
// While vm1 pings vm2 five times a second, vhostd is killed with SIGKILL
// and started again three times: the guests keep running (no reboot:
// their uptime grows by the time that passed), QEMU sets the device up
// again on each new connection, and pings resume:
//   - client: the guests serve their sockets (-chardev
//     socket,server=on,wait=off) and vhostd connects at once: within 1 s
//     of the new vhostd's start.
//   - server: vhostd replaces the socket the killed one left, and QEMU
//     (reconnect=1) connects again on one of its retries, a second apart:
//     within 3 s (seen: 0.5-0.7 s mostly, as vhostd starts 0.5 s after
//     the kill; 1.3 and 2.6 s when a TCG-busy QEMU missed a retry).
func TestRestartQEMU(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	for _, mode := range []string{"client", "server"} {
		t.Run(mode, func(t *testing.T) { testRestartQEMU(t, mode == "client") })
	}
}

func testRestartQEMU(t *testing.T, client bool) {
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	fe := sockDir(t) // QEMU's sockets, apart from vhostd's directory
	vms := []vm{
		{"vm1", "10.9.0.1", "52:54:00:00:00:01", filepath.Join(fe, "vm1.sock")},
		{"vm2", "10.9.0.2", "52:54:00:00:00:02", filepath.Join(fe, "vm2.sock")},
	}
	args := []string{"--socket", "vm1=" + vms[0].sock, "--socket", "vm2=" + vms[1].sock}
	mode, within := "server", 3*time.Second
	if client {
		args[1] += ",client"
		args[3] += ",client"
		mode, within = "client", time.Second
	}
	v := startVhostd(t, dir, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfgs := make([]qemu.GuestConfig, len(vms))
	for i, g := range vms {
		cfgs[i] = g.config(t, kernel, initrd)
		cfgs[i].NICs[0].Server = client
		if !client {
			cfgs[i].NICs[0].Reconnect = 1
		}
	}
	guests := startGuests(t, ctx, cfgs...)
	g1, g2 := guests[0], guests[1]
	warmUp(t, ctx, g1, vms[1].ip)
	ping(t, ctx, g2, "vm2", vms[0].ip, 56, 5)
	for name, p := range v.ports(t) {
		if p.State != "running" || p.Vhost.Mode != mode {
			t.Errorf("port %s: state %s mode %s", name, p.State, p.Vhost.Mode)
		}
	}

	up1, up2 := guestUptime(t, ctx, g1), guestUptime(t, ctx, g2)
	upAt := time.Now()
	const (
		restarts = 3
		interval = 200 * time.Millisecond
		count    = 75 // 15 s
	)
	type pingResult struct {
		out string
		err error
	}
	pinged := make(chan pingResult, 1)
	pingStart := time.Now()
	go func() {
		out, _, err := g1.Run(ctx, fmt.Sprintf("ping -i 0.2 -c %d -W 2 %s", count, vms[1].ip))
		pinged <- pingResult{out, err}
	}()
	var starts []time.Time
	var firstFrame []time.Duration
	for n := 1; n <= restarts; n++ {
		time.Sleep(3 * time.Second)
		v.kill(t)
		time.Sleep(500 * time.Millisecond)
		v = startVhostd(t, dir, args...)
		up := time.Since(v.Started)
		starts = append(starts, v.Started)
		// A frame delivered to each guest: vm1's ping reached vm2 and
		// vm2's reply came back (or ARP both ways).
		d := waitForwarding(t, v, 10*time.Second, "vm1", "vm2")
		firstFrame = append(firstFrame, d)
		t.Logf("restart %d: frames delivered both ways %d ms after vhostd's start (control socket up after %d ms)", n, d.Milliseconds(), up.Milliseconds())
		if d > within {
			t.Errorf("restart %d: traffic back both ways %v after vhostd's start, want within %v\nvhostd's log less debug lines:\n%s",
				n, d, within, withoutDebug(v.Log()))
		}
	}
	res := <-pinged
	if res.err != nil {
		t.Fatalf("ping: %v\n%s", res.err, res.out)
	}
	m := pingStats.FindStringSubmatch(res.out)
	if m == nil {
		t.Fatalf("no ping summary:\n%s", res.out)
	}
	// Ping n is sent about pingStart + n*interval and its reply arrives
	// its round-trip time later. A ping sent while vhostd is down waits in
	// the guest's transmit ring and is answered once the new vhostd runs:
	// the first reply to arrive after a restart's start says when pings
	// came back, as the guest saw it. The estimate runs early by the time
	// the guest took to start ping (console and fork under TCG), so the
	// bound is checked on vhostd's counters above; this is logged.
	answered := map[int]time.Time{}
	for _, r := range pingReply.FindAllStringSubmatch(res.out, -1) {
		seq, _ := strconv.Atoi(r[1])
		rtt, _ := strconv.ParseFloat(r[2], 64)
		answered[seq] = pingStart.Add(time.Duration(seq)*interval + time.Duration(rtt*float64(time.Millisecond)))
	}
	var resumed []time.Duration
	for n, st := range starts {
		first, at := -1, time.Time{}
		for seq := 0; seq < count; seq++ {
			if a, ok := answered[seq]; ok && a.After(st) && (first < 0 || a.Before(at)) {
				first, at = seq, a
			}
		}
		if first < 0 {
			t.Errorf("restart %d: no ping answered after vhostd started again", n+1)
			continue
		}
		d := at.Sub(st)
		resumed = append(resumed, d)
		t.Logf("restart %d: first ping reply about %d ms after vhostd's start (ping seq %d)", n+1, d.Milliseconds(), first)
	}
	t.Logf("%s mode: vm1 -> vm2 every 200 ms over %d restarts: %s (%d lost); traffic back both ways after %v (median %d ms), first ping reply about %v after vhostd's start",
		mode, restarts, m[0], count-len(answered), firstFrame, median(firstFrame).Milliseconds(), resumed)

	// No reboot: each guest's uptime grew by the time that passed.
	elapsed := time.Since(upAt).Seconds()
	for i, g := range []*qemu.Guest{g1, g2} {
		before := []float64{up1, up2}[i]
		after := guestUptime(t, ctx, g)
		if after < before+elapsed-2 || after > before+elapsed+2 {
			t.Errorf("vm%d: uptime %.1f s before, %.1f s after %.1f s: the guest rebooted or stalled", i+1, before, after, elapsed)
		}
		if n := strings.Count(g.Console(), qemu.ReadyMarker); n != 1 {
			t.Errorf("vm%d booted %d times", i+1, n)
		}
	}
	// And both ways, every ping, on the last vhostd.
	ping(t, ctx, g1, "vm1", vms[1].ip, 1400, 5)
	ping(t, ctx, g2, "vm2", vms[0].ip, 1400, 5)
}
