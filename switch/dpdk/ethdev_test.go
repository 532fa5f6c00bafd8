//go:build cgo

package dpdk

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

var vdevSeq atomic.Int32

// newVdev probes a fresh vdev of driver (net_ring, net_null) with args,
// configured with one queue pair over a pool of the given data room, and
// started. Everything is released at the end of the test.
func newVdev(t testing.TB, driver, args string, dataRoom int) (*Port, *Mempool) {
	t.Helper()
	return newVdevConf(t, driver, args, dataRoom, PortConfig{})
}

func TestProbeUnknownDevice(t *testing.T) {
	_, err := testEAL.Probe("no_such_driver0")
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("Probe of an unknown driver: %v, want *Error", err)
	}
	msg := err.Error()
	for _, want := range []string{`probe DPDK device "no_such_driver0"`, "failed to parse device", "net_tap0,iface="} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestProbeMissingInterface(t *testing.T) {
	_, err := testEAL.Probe("net_af_packet9,iface=vdnosuch0")
	if err == nil || !strings.Contains(err.Error(), "No such device") {
		t.Fatalf("Probe af_packet on a missing interface: %v", err)
	}
}

func TestInitTwice(t *testing.T) {
	if _, err := Init(nil, nil); !errors.Is(err, ErrInitialized) {
		t.Fatalf("second Init: %v", err)
	}
}

func TestPortInfoAndLink(t *testing.T) {
	p, _ := newVdev(t, "net_ring", "", 2048+Headroom)
	if p.Driver() != "net_ring" || !strings.HasPrefix(p.Name(), "net_ring") {
		t.Errorf("driver %q name %q", p.Driver(), p.Name())
	}
	info, err := p.Info()
	if err != nil || info.MaxMTU < 1500 {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	l, err := p.Link()
	if err != nil || !l.Up {
		t.Fatalf("Link of a started ring port = %v, %v", l, err)
	}
	if mac, err := p.MAC(); err != nil || len(mac) != 6 {
		t.Fatalf("MAC = %v, %v", mac, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if l, _ := p.Link(); l.Up {
		t.Errorf("link of a stopped ring port is up")
	}
}

func frameOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// TestRingLoopback sends frames through a net_ring port (its transmit ring
// is its receive ring) and checks every byte, including frames that span
// several mbufs on the way out and come back as chains.
func TestRingLoopback(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := RegisterThread(); err != nil {
		t.Fatal(err)
	}
	p, pool := newVdev(t, "net_ring", "", 1024+Headroom)
	rx, tx := p.NewRxQueue(), p.NewTxQueue(pool)
	defer rx.Close()
	defer tx.Close()
	sizes := []int{60, 1024, 1025, 1514, 4000, 9018}
	var want [][]byte
	for i, n := range sizes {
		f := frameOf(n, byte(i))
		want = append(want, f)
		// Hand the frame over in uneven segments, as guest buffers come.
		segs := [][]byte{f[:min(n, 17)], f[min(n, 17):min(n, 1100)], f[min(n, 1100):]}
		if !tx.Add(segs, n) {
			t.Fatalf("Add frame %d (%d bytes) failed with %d stashed", i, n, tx.Stashed())
		}
	}
	sent, bytesSent := tx.Flush()
	if sent != len(sizes) {
		t.Fatalf("sent %d of %d", sent, len(sizes))
	}
	var total uint64
	for _, n := range sizes {
		total += uint64(n)
	}
	if bytesSent != total {
		t.Errorf("Flush bytes %d, want %d", bytesSent, total)
	}
	got := rx.Receive(MaxBurst)
	if got != len(sizes) {
		t.Fatalf("received %d of %d", got, len(sizes))
	}
	var segs [][]byte
	for i := 0; i < got; i++ {
		var n int
		var ok bool
		segs, n, ok = rx.Frame(i, segs[:0])
		if !ok || n != sizes[i] {
			t.Fatalf("frame %d: ok %v len %d, want %d", i, ok, n, sizes[i])
		}
		if wantSegs := (sizes[i] + 1023) / 1024; len(segs) != wantSegs {
			t.Errorf("frame %d: %d segments, want %d", i, len(segs), wantSegs)
		}
		if b := bytes.Join(segs, nil); !bytes.Equal(b, want[i]) {
			t.Errorf("frame %d differs after the round trip", i)
		}
	}
	rx.Release()
	st, err := p.Stats()
	if err != nil || st.TxPackets != uint64(len(sizes)) || st.RxPackets != uint64(len(sizes)) {
		t.Errorf("Stats = %+v, %v", st, err)
	}
	xs, err := p.Xstats()
	if err != nil || len(xs) == 0 {
		t.Fatalf("Xstats = %v, %v", xs, err)
	}
	found := false
	for _, x := range xs {
		if x.Name == "rx_good_packets" && x.Value == uint64(len(sizes)) {
			found = true
		}
	}
	if !found {
		t.Errorf("xstats lack rx_good_packets=%d: %v", len(sizes), xs)
	}
	// Every mbuf is back: the pool holds all but the stash.
	if a := pool.Available(); a != pool.Size()-tx.Stashed() {
		t.Errorf("pool has %d free, want %d (size %d, stash %d)", a, pool.Size()-tx.Stashed(), pool.Size(), tx.Stashed())
	}
}

func TestTxFullFreesUnsent(t *testing.T) {
	p, pool := newVdev(t, "net_ring", "", 2048+Headroom)
	rx, tx := p.NewRxQueue(), p.NewTxQueue(pool)
	defer rx.Close()
	defer tx.Close()
	f := frameOf(64, 1)
	// net_ring's rings hold 1023 frames: fill them, then see the rest
	// refused and freed.
	var sent, refused int
	for round := 0; round < 40; round++ {
		for i := 0; i < 32; i++ {
			if !tx.Add([][]byte{f}, len(f)) {
				t.Fatal("Add failed")
			}
		}
		s, _ := tx.Flush()
		sent += s
		refused += 32 - s
	}
	if refused == 0 || sent+refused != 40*32 {
		t.Fatalf("sent %d refused %d", sent, refused)
	}
	for rx.Receive(MaxBurst) > 0 {
	}
	rx.Release()
	if a := pool.Available(); a != pool.Size()-tx.Stashed() {
		t.Errorf("pool has %d free after refusals, want %d: refused mbufs leaked", a, pool.Size()-tx.Stashed())
	}
}

func TestStashRunsDry(t *testing.T) {
	p, pool := newVdev(t, "net_ring", "", 256+Headroom)
	tx := p.NewTxQueue(pool)
	defer tx.Close()
	f := frameOf(9000, 1) // 36 mbufs of 256 bytes
	added := 0
	for tx.Add([][]byte{f}, len(f)) {
		added++
	}
	if added != stashSize/36 {
		t.Fatalf("added %d jumbo frames from a stash of %d, want %d", added, stashSize, stashSize/36)
	}
	if s, _ := tx.Flush(); s != added {
		t.Fatalf("sent %d of %d", s, added)
	}
	if tx.Stashed() != stashSize {
		t.Fatalf("stash not refilled: %d", tx.Stashed())
	}
}

func TestRegisterThreadIdempotent(t *testing.T) {
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := RegisterThread(); err != nil {
			done <- err
			return
		}
		id := LcoreID()
		if err := RegisterThread(); err != nil || LcoreID() != id || id < 0 {
			done <- fmt.Errorf("second RegisterThread: %v, lcore %d then %d", err, id, LcoreID())
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestErrorUnwrap(t *testing.T) {
	err := newError("op", -int(syscall.EEXIST), noMark)
	if !errors.Is(err, syscall.EEXIST) || !strings.Contains(err.Error(), "op: File exists") {
		t.Fatalf("error %v", err)
	}
}
