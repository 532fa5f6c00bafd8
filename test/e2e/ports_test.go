package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	"github.com/vhostd/vhostd/qemu"
	"github.com/vhostd/vhostd/test/guestimage"
	"github.com/vhostd/vhostd/test/testpmd"
)

const macC = "02:00:00:00:00:0c"

// procCounts returns how many fds vhostd holds and how many of its
// mappings are memfds (guest memory).
func (v *vhostd) procCounts(t *testing.T) (fds, memfds int) {
	t.Helper()
	pid := v.cmd.Process.Pid
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents), strings.Count(string(maps), "/memfd:")
}

// stableCounts returns procCounts once two reads 50 ms apart agree: the
// server side of a control request just answered may not be closed yet.
func (v *vhostd) stableCounts(t *testing.T) (fds, memfds int) {
	t.Helper()
	fds, memfds = v.procCounts(t)
	for i := 0; i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		f, m := v.procCounts(t)
		if f == fds && m == memfds {
			break
		}
		fds, memfds = f, m
	}
	return fds, memfds
}

// waitCounts polls procCounts until it gives fds and memfds (a control
// connection may still be closing), and returns the last counts.
func (v *vhostd) waitCounts(t *testing.T, fds, memfds int) (int, int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, m := v.procCounts(t)
		if (f == fds && m == memfds) || time.Now().After(deadline) {
			return f, m
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRuntimePorts adds a port with vhostctl add-port while testpmd sends
// a fixed count of frames between ports a and b (none may be lost: the
// switch's pollers take the new port between bursts), gives the new port
// a frontend that exchanges frames with a, and deletes it with vhostctl
// del-port while attached, under a and b's traffic again (none lost): the
// frontend sees its link go down, the socket file goes, the port's
// addresses leave the FDB, and vhostd is back to the fds and guest memory
// mappings it had before the port was added. The state file follows each
// change.
func TestRuntimePorts(t *testing.T) {
	requirePeer(t, testpmd.DefaultBinary)
	const perPort = 40000
	dir := sockDir(t)
	state := filepath.Join(dir, "state", "state.toml")
	v := startVhostd(t, dir, "--socket", "a="+filepath.Join(dir, "a.sock"), "--socket", "b="+filepath.Join(dir, "b.sock"), "--state-file", state)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tp := v.startTestpmd(t, ctx, testpmd.Config{
		Ports: []testpmd.Port{
			{Socket: filepath.Join(dir, "a.sock"), MAC: macA},
			{Socket: filepath.Join(dir, "b.sock"), MAC: macB},
		},
		PeerMACs: []string{macB, macA},
		TxPkts:   60,
	})

	type result struct {
		st  []testpmd.PortStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := tp.SendExact(ctx, perPort, testpmd.SendOptions{})
		done <- result{st, err}
	}()
	// Add c once a and b are well under way.
	for deadline := time.Now().Add(30 * time.Second); v.stats(t)["a"].RxPackets < 2000; {
		if time.Now().After(deadline) {
			t.Fatalf("a and b traffic did not start: %+v", v.stats(t))
		}
		time.Sleep(5 * time.Millisecond)
	}
	fds0, mem0 := v.stableCounts(t)
	cSock := filepath.Join(dir, "c.sock")
	out := vhostctl(t, v, "add-port", "c", "--socket", cSock, "--mac", macC)
	if sent := v.stats(t)["a"].RxPackets; sent >= perPort {
		t.Errorf("a had sent all its %d frames before add-port returned: the test did not add a port under traffic (raise perPort)", sent)
	}
	if !strings.Contains(out, "port c added; state saved to "+state) {
		t.Errorf("vhostctl add-port printed %q", out)
	}
	fds1, _ := v.procCounts(t)
	r := <-done
	if r.err != nil {
		t.Fatalf("a<->b while adding c: %v\nvhostd log:\n%s", r.err, tail(v.Log(), 3000))
	}
	for i, s := range r.st {
		if s.TxPackets != perPort || s.RxPackets != perPort {
			t.Errorf("testpmd port %d: tx %d rx %d, want %d each way (frames lost while c was added)", i, s.TxPackets, s.RxPackets, perPort)
		}
	}
	v.matchTestpmd(t, []string{"a", "b"}, r.st)
	if st, err := config.Load(state); err != nil || len(st.Ports) != 3 || !reflect.DeepEqual(st.Ports[2], config.Port{Name: "c", Socket: cSock, MAC: macC}) {
		t.Errorf("state file after add-port: %+v, %v", st.Ports, err)
	}

	// A frontend on c: 1000 frames c -> a, then 1000 a -> c.
	tpc := v.startTestpmd(t, ctx, testpmd.Config{
		Ports:    []testpmd.Port{{Socket: cSock, MAC: macC}},
		PeerMACs: []string{macA},
		TxPkts:   60,
	})
	fds2, mem2 := v.procCounts(t)
	if p := v.ports(t)["c"]; p.State != "running" {
		t.Fatalf("port c with testpmd attached: %s", p.State)
	}
	// SendExact leaves a testpmd stopped: a receives (rxonly) only once
	// started again.
	if err := tp.ClearStats(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tp.StartFwd(ctx); err != nil {
		t.Fatal(err)
	}
	stc, err := tpc.SendExact(ctx, 1000, testpmd.SendOptions{Settle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	st, err := tp.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); st[0].RxPackets < 1000 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st, err = tp.Stats(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if stc[0].TxPackets != 1000 || st[0].RxPackets != 1000 {
		t.Errorf("c sent %d frames to a, a received %d; want 1000", stc[0].TxPackets, st[0].RxPackets)
	}
	if _, err := tp.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tp.SetEthPeer(ctx, 0, macC); err != nil {
		t.Fatal(err)
	}
	if err := tpc.ClearStats(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tpc.StartFwd(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = tp.SendExact(ctx, 1000, testpmd.SendOptions{Settle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Frames delivered to c are counted once its testpmd polls them.
	var cRx uint64
	for deadline := time.Now().Add(5 * time.Second); ; {
		sc, err := tpc.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cRx = sc[0].RxPackets; cRx >= 1000 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st[0].TxPackets != 1000 || cRx != 1000 {
		t.Errorf("a sent %d frames to c, c received %d; want 1000", st[0].TxPackets, cRx)
	}
	if s := v.stats(t)["c"]; s.RxPackets != 1000 || s.TxPackets != 1000 {
		t.Errorf("vhostd port c: rx %d tx %d, want 1000 each way", s.RxPackets, s.TxPackets)
	}
	if fdb := vhostctl(t, v, "fdb"); !strings.Contains(fdb, macC+"  c") {
		t.Errorf("c's address not in the FDB:\n%s", fdb)
	}

	// Delete c with its frontend attached, while a and b exchange a
	// fixed count again: none of theirs may be lost.
	if err := tp.SetEthPeer(ctx, 0, macB); err != nil {
		t.Fatal(err)
	}
	before := v.stats(t)
	go func() {
		st, err := tp.SendExact(ctx, perPort, testpmd.SendOptions{})
		done <- result{st, err}
	}()
	for deadline := time.Now().Add(30 * time.Second); v.stats(t)["a"].RxPackets < before["a"].RxPackets+2000; {
		if time.Now().After(deadline) {
			t.Fatalf("a and b traffic did not start again: %+v", v.stats(t))
		}
		time.Sleep(5 * time.Millisecond)
	}
	out = vhostctl(t, v, "del-port", "c")
	if sent := v.stats(t)["a"].RxPackets - before["a"].RxPackets; sent >= perPort {
		t.Errorf("a had sent all its %d frames before del-port returned: the test did not delete a port under traffic (raise perPort)", sent)
	}
	if !strings.Contains(out, "port c deleted") {
		t.Errorf("vhostctl del-port printed %q", out)
	}
	r = <-done
	if r.err != nil {
		t.Fatalf("a<->b while deleting c: %v\nvhostd log:\n%s", r.err, tail(v.Log(), 3000))
	}
	after := v.stats(t)
	for i, name := range []string{"a", "b"} {
		s, b := after[name], before[name]
		if r.st[i].TxPackets != perPort || r.st[i].RxPackets != perPort {
			t.Errorf("testpmd port %d: tx %d rx %d, want %d each way (frames lost while c was deleted)", i, r.st[i].TxPackets, r.st[i].RxPackets, perPort)
		}
		if s.RxPackets-b.RxPackets != r.st[i].TxPackets || s.TxPackets-b.TxPackets != r.st[i].RxPackets || totalDrops(s) != totalDrops(b) {
			t.Errorf("vhostd port %s while c was deleted: rx %d tx %d, %d new drops; testpmd port %d sent %d received %d",
				name, s.RxPackets-b.RxPackets, s.TxPackets-b.TxPackets, totalDrops(s)-totalDrops(b), i, r.st[i].TxPackets, r.st[i].RxPackets)
		}
	}
	fds3, mem3 := v.waitCounts(t, fds0, mem0)
	t.Logf("vhostd fds / guest memory mappings: %d/%d before add-port c, %d after, %d/%d with c's frontend attached, %d/%d after del-port c",
		fds0, mem0, fds1, fds2, mem2, fds3, mem3)
	if fds3 != fds0 || mem3 != mem0 {
		t.Errorf("after del-port c vhostd holds %d fds and %d memfd mappings; %d and %d before c was added", fds3, mem3, fds0, mem0)
	}
	if fds2 <= fds1 || mem2 <= mem0 {
		t.Errorf("c's frontend added no fds (%d -> %d) or mappings (%d -> %d): the counts prove nothing", fds1, fds2, mem0, mem2)
	}
	if _, err := os.Lstat(cSock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("c's socket after del-port: %v", err)
	}
	if _, ok := v.ports(t)["c"]; ok {
		t.Error("port c still listed after del-port")
	}
	if fdb := vhostctl(t, v, "fdb"); strings.Contains(fdb, macC) {
		t.Errorf("c's address still in the FDB after del-port:\n%s", fdb)
	}
	down := false
	for deadline := time.Now().Add(10 * time.Second); !down && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ls, err := tpc.Links(ctx)
		if err != nil {
			t.Fatal(err)
		}
		down = len(ls) == 1 && !ls[0].Up
	}
	if !down {
		t.Error("c's frontend (testpmd) did not see its link go down after del-port")
	}
	if st, err := config.Load(state); err != nil || len(st.Ports) != 2 {
		t.Errorf("state file after del-port: %+v, %v", st.Ports, err)
	}
}

// TestStateFileRestart: a port added at runtime is there after a restart
// with the same command line (the state file wins over --socket), one
// deleted stays deleted, and dump-config prints what the state file holds.
func TestStateFileRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vhostd")
	}
	dir := sockDir(t)
	state := filepath.Join(dir, "state.toml")
	args := []string{"--socket", "a=" + filepath.Join(dir, "a.sock"), "--socket", "b=" + filepath.Join(dir, "b.sock"), "--state-file", state}
	v := startVhostd(t, dir, args...)
	vhostctl(t, v, "add-port", "c", "--socket", filepath.Join(dir, "c.sock"), "--queues", "2", "--disable", "mrg_rxbuf", "--mac", "learn", "--max-macs", "4", "--mode", "0600")
	vhostctl(t, v, "del-port", "a")
	dump := vhostctl(t, v, "dump-config")
	v.stop()

	v = startVhostd(t, dir, args...)
	names := []string{}
	var ports []control.PortInfo
	if err := control.Call(context.Background(), v.Control, "ports", &ports); err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "b,c" {
		t.Errorf("after restart, ports %v; want b,c", names)
	}
	if p := v.ports(t)["c"]; p.MAC != "learn" || p.MaxMACs != 4 || strings.Contains(strings.Join(p.Vhost.Offered, ","), "mrg_rxbuf") {
		t.Errorf("port c after restart: %+v", p)
	}
	if again := vhostctl(t, v, "dump-config"); again != dump {
		t.Errorf("dump-config before restart:\n%s\nafter:\n%s", dump, again)
	}
	if !strings.Contains(v.Log(), "loaded the state file") {
		t.Errorf("vhostd did not say it loaded the state file:\n%s", v.Log())
	}
	// A broken state file stops vhostd with a word on what to do.
	v.stop()
	os.WriteFile(state, []byte("pollerz = 1\n"), 0o644)
	b, err := exec.Command(vhostdBin, append([]string{"--control", v.Control}, args...)...).CombinedOutput()
	if out := string(b); err == nil || !strings.Contains(out, "remove it to start from --config and --socket") {
		t.Errorf("vhostd with a broken state file: %v\n%s", err, b)
	}
}

// TestQEMURuntimePorts starts vhostd with no ports (a state file allows
// it), adds two with vhostctl add-port, and boots a QEMU guest on each:
// they ping each other. vm2's port is then deleted under its guest, which
// loses vm1 (its pings go unanswered), and added again: QEMU (reconnect=1)
// reconnects and the pings come back.
func TestQEMURuntimePorts(t *testing.T) {
	requirePeer(t, qemu.DefaultBinary)
	kernel, initrd := guestimage.ForTest(t)
	dir := sockDir(t)
	v := startVhostd(t, dir, "--state-file", filepath.Join(dir, "state.toml"))
	if n := len(v.ports(t)); n != 0 {
		t.Fatalf("vhostd started with %d ports, want none", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vms := []vm{
		{"vm1", "10.9.0.1", "52:54:00:00:00:01", filepath.Join(dir, "vm1.sock")},
		{"vm2", "10.9.0.2", "52:54:00:00:00:02", filepath.Join(dir, "vm2.sock")},
	}
	for _, g := range vms {
		vhostctl(t, v, "add-port", g.name, "--socket", g.sock, "--mac", g.mac)
	}
	cfgs := []qemu.GuestConfig{vms[0].config(t, kernel, initrd), vms[1].config(t, kernel, initrd)}
	cfgs[1].NICs[0].Reconnect = 1
	guests := startGuests(t, ctx, cfgs...)
	g1, g2 := guests[0], guests[1]
	warmUp(t, ctx, g1, vms[1].ip)
	for _, size := range []int{56, 1400} {
		ping(t, ctx, g1, "vm1", vms[1].ip, size, 5)
		ping(t, ctx, g2, "vm2", vms[0].ip, size, 5)
	}

	vhostctl(t, v, "del-port", "vm2")
	if _, err := os.Lstat(vms[1].sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("vm2's socket after del-port: %v", err)
	}
	if out, code, err := g1.Run(ctx, "ping -c 2 -W 1 "+vms[1].ip); err != nil || code == 0 {
		t.Errorf("vm1 reached vm2 after vm2's port was deleted: %v %d\n%s", err, code, out)
	}

	vhostctl(t, v, "add-port", "vm2", "--socket", vms[1].sock, "--mac", vms[1].mac)
	deadline := time.Now().Add(30 * time.Second)
	for v.ports(t)["vm2"].State != "running" {
		if time.Now().After(deadline) {
			t.Fatalf("vm2's QEMU did not reconnect to the port added again: %+v\n%s", v.ports(t)["vm2"], tail(v.Log(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	warmUp(t, ctx, g1, vms[1].ip)
	ping(t, ctx, g1, "vm1", vms[1].ip, 56, 5)
	ping(t, ctx, g2, "vm2", vms[0].ip, 56, 5)
}

// TestAddClientPort adds a client-mode port at runtime (vhostctl add-port
// --client) to a socket testpmd serves (server=1): exact counts between it
// and a server-mode port, dump-config says client = true, and del-port
// leaves the frontend's socket alone.
func TestAddClientPort(t *testing.T) {
	requirePeer(t, testpmd.DefaultBinary)
	dir := sockDir(t)
	v := startVhostd(t, dir, "--socket", "a="+filepath.Join(dir, "a.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := filepath.Join(dir, "c-frontend.sock")
	type started struct {
		tp  *testpmd.TestPMD
		err error
	}
	ch := make(chan started, 1)
	// testpmd blocks in the probe of a server port until a backend has
	// connected: start it aside, add the port once its socket exists.
	go func() {
		tp, err := testpmd.Start(ctx, testpmd.Config{
			Ports:    []testpmd.Port{{Socket: filepath.Join(dir, "a.sock"), MAC: macA}, {Socket: cs, MAC: macC, Server: true}},
			PeerMACs: []string{macC, macA},
			TxPkts:   60,
			LogFile:  filepath.Join(t.TempDir(), "testpmd.log"),
		})
		ch <- started{tp, err}
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(cs); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("testpmd did not create its server socket %s", cs)
		}
	}
	vhostctl(t, v, "add-port", "c", "--socket", cs, "--client")
	s := <-ch
	if s.err != nil {
		t.Fatalf("testpmd: %v\nvhostd log:\n%s", s.err, tail(v.Log(), 3000))
	}
	t.Cleanup(func() { s.tp.Close() })
	if err := s.tp.WaitLinksUp(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.tp.SendExact(ctx, 1000, testpmd.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range st {
		if p.TxPackets != 1000 || p.RxPackets != 1000 {
			t.Errorf("testpmd port %d: tx %d rx %d, want 1000 each way", i, p.TxPackets, p.RxPackets)
		}
	}
	v.matchTestpmd(t, []string{"a", "c"}, st)
	if dump := vhostctl(t, v, "dump-config"); !strings.Contains(dump, "client = true") {
		t.Errorf("dump-config does not say c is a client port:\n%s", dump)
	}
	vhostctl(t, v, "del-port", "c")
	if _, err := os.Stat(cs); err != nil {
		t.Errorf("the frontend's socket after del-port of a client port: %v", err)
	}
	if _, ok := v.ports(t)["c"]; ok {
		t.Error("port c still listed after del-port")
	}
}
