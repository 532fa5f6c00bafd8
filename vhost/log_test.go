package vhost_test

import (
	"encoding/binary"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

const pLogShmfd1 = 1 << 1 // VHOST_USER_PROTOCOL_F_LOG_SHMFD

func newLog(t *testing.T, size int) *vt.Log {
	t.Helper()
	l, err := vt.NewLog(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// logMappings counts vhostd's (and the test's) mappings of test logs.
func logMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "memfd:vhosttest-log")
}

// TestSetLogBaseReply: with LOG_SHMFD negotiated, SET_LOG_BASE is answered
// with a u64 0, as QEMU waits for, and the connection goes on; with
// NEED_REPLY as well, that reply is the only one (it stands for the ack).
func TestSetLogBaseReply(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck|pLogShmfd1); err != nil {
		t.Fatal(err)
	}
	l := newLog(t, 8192)
	maps := logMappings(t)
	if err := f.SetLogBase(l.FD, 8192, 0); err != nil {
		t.Fatal(err)
	}
	if got := logMappings(t); got != maps+1 {
		t.Fatalf("%d log mappings, want %d", got, maps+1)
	}
	if err := f.Send(vt.SetLogBase, vt.FlagVersion|vt.FlagNeedReply, vt.LogPayload(4096, 4096), l.FD); err != nil {
		t.Fatal(err)
	}
	if err := f.Ack(vt.SetLogBase); err != nil {
		t.Fatal(err)
	}
	// The replaced log is unmapped; the next request is answered in turn
	// (no stray second reply).
	if got := logMappings(t); got != maps+1 {
		t.Fatalf("%d log mappings after a second SET_LOG_BASE, want %d", got, maps+1)
	}
	if v, err := f.GetU64(vt.GetFeatures); err != nil || v&(1<<vhost.FeatureLogAll) == 0 {
		t.Fatalf("GET_FEATURES after SET_LOG_BASE: %#x, %v", v, err)
	}
	f.Close()
	waitDisconnected(t, s)
	if got := logMappings(t); got != maps {
		t.Fatalf("%d log mappings after the disconnect, want %d", got, maps)
	}
}

// TestSetLogBaseRefused: a log vhostd cannot use ends the connection with
// the reason in the status, and leaks no fd or mapping.
func TestSetLogBaseRefused(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	unsealable, err := unix.MemfdCreate("vhosttest-log", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(unsealable)
	unix.Ftruncate(unsealable, 8192)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	l := newLog(t, 8192)
	cases := []struct {
		name     string
		protocol uint64
		payload  []byte
		fd       int
		want     string
	}{
		{"size zero", pLogShmfd1, vt.LogPayload(0, 0), l.FD, "log size is zero"},
		{"absurd size", pLogShmfd1, vt.LogPayload(1<<40, 0), l.FD, "limit"},
		{"fd too small", pLogShmfd1, vt.LogPayload(8192, 4096), l.FD, "holds only"},
		{"offset wraps", pLogShmfd1, vt.LogPayload(8192, ^uint64(0)-4096), l.FD, "wrap"},
		{"unsealable memfd", pLogShmfd1, vt.LogPayload(8192, 0), unsealable, "sealed against shrinking"},
		{"pipe", pLogShmfd1, vt.LogPayload(8192, 0), pipe[0], "not a regular file"},
		{"without LOG_SHMFD", 0, vt.LogPayload(8192, 0), l.FD, "log_shmfd"},
		{"short payload", pLogShmfd1, make([]byte, 8), l.FD, "payload is 8 bytes"},
		{"no fd", pLogShmfd1, vt.LogPayload(8192, 0), -1, "want 1"},
	}
	before := openFDs(t)
	maps := logMappings(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := dial(t, path)
			if _, err := f.Negotiate(fVersion1|fProtocol, c.protocol); err != nil {
				t.Fatal(err)
			}
			var fds []int
			if c.fd >= 0 {
				fds = append(fds, c.fd)
			}
			if err := f.Send(vt.SetLogBase, vt.FlagVersion, c.payload, fds...); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Reply(vt.SetLogBase); err == nil {
				t.Fatal("refused log answered as if accepted")
			}
			waitDisconnected(t, s)
			if got := s.Status().LastError; !strings.Contains(got, c.want) {
				t.Fatalf("last error %q, want %q", got, c.want)
			}
			f.Close()
		})
	}
	waitFDs(t, before)
	if got := logMappings(t); got != maps {
		t.Fatalf("%d log mappings, want %d: a refused log stayed mapped", got, maps)
	}
}

// TestSetLogFDClosed: SET_LOG_FD is accepted and its fd closed.
func TestSetLogFDClosed(t *testing.T) {
	_, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck|pLogShmfd1); err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	if err := f.Send(vt.SetLogFD, vt.FlagVersion|vt.FlagNeedReply, nil, efd); err != nil {
		t.Fatal(err)
	}
	unix.Close(efd) // the backend's copy is the only one left
	if err := f.Ack(vt.SetLogFD); err != nil {
		t.Fatal(err)
	}
	waitFDs(t, before-1)
}

// migrateStart does what QEMU does when a migration starts: SET_LOG_BASE,
// SET_FEATURES with LOG_ALL, SET_VRING_ADDR with the log flag per ring.
func migrateStart(t *testing.T, g *guest, feats uint64, l *vt.Log) {
	t.Helper()
	f := g.f
	if err := f.SetLogBase(l.FD, uint64(len(l.Bits)), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.SetU64(vt.SetFeatures, feats|1<<vhost.FeatureLogAll, true); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*vt.Ring{g.rx, g.tx} {
		if err := f.Send(vt.SetVringAddr, vt.FlagVersion|vt.FlagNeedReply, f.LogAddrPayload(r)); err != nil {
			t.Fatal(err)
		}
		if err := f.Ack(vt.SetVringAddr); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDirtyLogThroughSwitch: a guest migrating as QEMU migrates it gets
// every page vhostd writes marked, frames and used rings; the log is
// swapped while frames flow (as QEMU does when memory is hot-plugged
// mid-migration) without a fault, each old log unmapped; and GET_VRING_BASE
// at the stop reports exactly where the driver's next buffer is.
func TestDirtyLogThroughSwitch(t *testing.T) {
	_, pathA, pathB := twoServers(t)
	feats := uint64(fVersion1 | fProtocol)
	a := connectGuest(t, pathA, feats)
	b := dial(t, pathB)
	if err := b.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Negotiate(feats, pReplyAck|pLogShmfd1); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	gb := setupRings(t, b)
	exchange(t, a, gb, 64)

	// The log covers guest-physical memory from 0 to the end of b's.
	logSize := int((b.GPA + uint64(len(b.Memory))) / 4096 / 8)
	l := newLog(t, logSize)
	migrateStart(t, gb, feats, l)
	exchange(t, a, gb, 1000)
	rxUsed := gb.rx.Driver.Config().Used
	if !l.Dirty(rxUsed) {
		t.Fatal("b's receive used ring not marked")
	}
	last := gb.rx.Driver.DescAddr(0)
	if !l.Dirty(last) {
		t.Fatalf("b's receive buffer at %#x not marked", last)
	}
	if l.Dirty(0x40000000 + 48<<20) {
		t.Fatal("a page vhostd never wrote is marked")
	}

	// Swap the log again and again while a streams frames into b.
	var delivered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		frame := append(make([]byte, 12), ethFrame(0xb, 0xa, 200)...)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if gb.rx.Driver.Outstanding() < 8 {
				gb.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
			}
			if a.tx.Driver.Outstanding() < 8 {
				a.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: frame}})
				a.tx.KickNow()
			}
			pfd := []unix.PollFd{{Fd: int32(gb.rx.Call), Events: unix.POLLIN}}
			unix.Poll(pfd, 50)
			var buf [8]byte
			unix.Read(gb.rx.Call, buf[:])
			delivered.Add(int64(len(gb.rx.Driver.CollectUsed())))
			a.tx.Driver.CollectUsed()
		}
	}()
	maps := logMappings(t)
	logs := []*vt.Log{l}
	for i := 0; i < 20; i++ {
		nl := newLog(t, logSize)
		if err := b.SetLogBase(nl.FD, uint64(logSize), 0); err != nil {
			t.Fatal(err)
		}
		logs = append(logs, nl)
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if delivered.Load() == 0 {
		t.Fatal("no frame delivered while the log was swapped")
	}
	// Each swap unmapped the log it replaced: vhostd maps only the last.
	if got := logMappings(t); got != maps+20 {
		t.Fatalf("%d log mappings, want %d (the test's %d and vhostd's one)", got, maps+20, maps+20-1)
	}
	// Let what is in flight arrive, so exchange sees its frame alone.
	for quiet := 0; quiet < 4; {
		time.Sleep(50 * time.Millisecond)
		n := len(gb.rx.Driver.CollectUsed()) + len(a.tx.Driver.CollectUsed())
		if n == 0 && a.tx.Driver.Outstanding() == 0 {
			quiet++
		}
	}
	var buf [8]byte
	unix.Read(gb.rx.Call, buf[:])
	final := logs[len(logs)-1]
	exchange(t, a, gb, 64)
	if !final.Dirty(rxUsed) {
		t.Fatal("the last log swapped in is not used")
	}

	// The stop: GET_VRING_BASE reports the next avail index the driver
	// will fill, every chain made available having been used.
	for _, r := range []*vt.Ring{gb.rx, gb.tx} {
		base, err := b.GetVringBase(r.Index)
		if err != nil {
			t.Fatal(err)
		}
		avail := binary.LittleEndian.Uint16(r.Driver.Read(r.Driver.Config().Avail+2, 2))
		if used := r.Driver.UsedIdx(); uint16(base) != used {
			t.Fatalf("ring %d: GET_VRING_BASE %d, used index %d: chains taken and not returned", r.Index, base, used)
		}
		if r == gb.tx && uint16(base) != avail {
			t.Fatalf("ring %d: GET_VRING_BASE %d, avail index %d", r.Index, base, avail)
		}
	}
}
