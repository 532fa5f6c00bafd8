package hostile

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/test/binaries"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// TestInternalError: a bug of vhostd's that a guest's frames reach costs
// that guest its connection, not the daemon nor the other guests. The
// daemon under test is built with -tags vhostd_bugprobe, which gives its
// switch a bug on purpose: a frame of ethertype 0x88b5 whose payload
// starts "vhostd-bugprobe" makes forward index out of range
// (switch/bugprobe.go). Guest a sends frames to b with that frame among
// them: a's connection is dropped with a log line naming the runtime
// error and its stack, the burst is counted as internal_error on a,
// vhostd runs on, b stays connected and still receives, and a fresh
// frontend on port a passes traffic again. The same for a bug a
// frontend's request reaches on the control path (vhost/bugprobe.go): a
// SET_VRING_NUM of size 0xb5b5 ends that connection only.
func TestInternalError(t *testing.T) {
	requireRoot(t)
	dir, err := binaries.BuildTags("vhostd_bugprobe", "./daemon/cmd/vhostd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	v := startVhostdBin(t, filepath.Join(dir, "vhostd"), names("a", "b", "c", "d"))
	defer v.finish(t, "internal error", "a", "c")
	a := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
	b := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
	a.PostRX(64, 2048)
	b.PostRX(128, 2048)
	macA, macB := v.mac("a"), v.mac("b")
	sendAll(t, b, [][]byte{vt.Frame(broadcast, macB, 0, 64)}) // b makes itself known
	a.Received()
	var before [][]byte
	for i := 0; i < 5; i++ {
		before = append(before, vt.Frame(macB, macA, i, 64))
	}
	sendAll(t, a, before)
	got := 0
	for deadline := time.Now().Add(5 * time.Second); got < len(before) && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got += len(b.Received())
	}
	if got != len(before) {
		t.Fatalf("b received %d of a's %d frames before the probe", got, len(before))
	}

	off := len(v.Log())
	probe := make([]byte, 60)
	copy(probe, macB[:])
	copy(probe[6:], macA[:])
	probe[12], probe[13] = 0x88, 0xb5
	copy(probe[14:], "vhostd-bugprobe")
	a.Send(vt.Frame(macB, macA, 100, 64), probe, vt.Frame(macB, macA, 101, 64))

	if closed, d := a.F.WaitClosed(5 * time.Second); !closed {
		t.Fatalf("a's connection still open %v after the frame that trips the bug (alive: %v)\n%s", d.Round(time.Millisecond), v.alive(), tail(v.LogSince(off), 3000))
	}
	if err := v.alive(); err != nil {
		t.Fatalf("after the bug: %v\n%s", err, tail(v.Log(), 4000))
	}
	want := "internal error in vhostd while forwarding this port's frames: runtime error: index out of range"
	log, ok := v.waitLog(off, 2*time.Second, func(s string) bool { return strings.Contains(s, want) })
	if !ok {
		t.Fatalf("log does not say %q:\n%s", want, tail(log, 3000))
	}
	if i := strings.Index(log, want); i >= 0 {
		line, _, _ := strings.Cut(log[max(0, strings.LastIndex(log[:i], "\n")+1):], "\n")
		t.Logf("vhostd: %.300s", line)
	}
	if !strings.Contains(log, "probeBug") {
		t.Errorf("the log line carries no stack naming the function that failed:\n%s", tail(log, 3000))
	}
	st := v.stats(t)
	if n := st["a"].Drops["internal_error"]; n < 1 || n > 3 {
		t.Errorf("a's internal_error drops = %d, want the burst's 1 to 3 frames", n)
	}
	if n := st["a"].InternalErrors; n != 1 {
		t.Errorf("a's internal_errors = %d, want 1", n)
	}
	if ps := v.ports(t); !ps["b"].Vhost.Connected {
		t.Error("b lost its connection to a's bug")
	}
	// b still receives: from a fresh frontend on c.
	c := v.guest(t, "c", guestMem, stdFeatures, stdProtocol)
	c.PostRX(16, 2048)
	b.Received()
	sendAll(t, c, [][]byte{vt.Frame(macB, v.mac("c"), 7, 80)})
	got = 0
	for deadline := time.Now().Add(5 * time.Second); got == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got += len(b.Received())
	}
	if got != 1 {
		t.Errorf("b received %d frames from c after a's bug, want 1", got)
	}
	c.Close()

	// The control path: a request that trips the probe in vhost's
	// handler (SET_VRING_NUM of size 0xb5b5) ends that frontend's
	// connection, not the daemon.
	off = len(v.Log())
	d := v.dial(t, "d")
	if err := d.Send(vt.SetOwner, vt.FlagVersion, nil); err != nil {
		t.Fatal(err)
	}
	num := make([]byte, 8)
	binary.LittleEndian.PutUint32(num[4:], 0xb5b5)
	if err := d.Send(vt.SetVringNum, vt.FlagVersion, num); err != nil {
		t.Fatal(err)
	}
	if closed, dur := d.WaitClosed(5 * time.Second); !closed {
		t.Fatalf("d's connection still open %v after the request that trips the bug (alive: %v)", dur.Round(time.Millisecond), v.alive())
	}
	if err := v.alive(); err != nil {
		t.Fatalf("after the control-path bug: %v\n%s", err, tail(v.Log(), 4000))
	}
	want = "internal error in vhostd handling the frontend's request: runtime error: index out of range"
	if log, ok := v.waitLog(off, 2*time.Second, func(s string) bool { return strings.Contains(s, want) && strings.Contains(s, "probeRequest") }); !ok {
		t.Fatalf("log does not say %q with a stack:\n%s", want, tail(log, 3000))
	}
	ps := v.ports(t)
	if !ps["b"].Vhost.Connected {
		t.Error("b lost its connection to d's bug")
	}
	if n := ps["d"].Vhost.InternalErrors; n != 1 || !strings.Contains(ps["d"].Vhost.LastError, "internal error in vhostd") {
		t.Errorf("d: internal_errors %d, last error %q; want 1 and the internal error", n, ps["d"].Vhost.LastError)
	}
}
