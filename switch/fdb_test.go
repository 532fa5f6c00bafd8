package vswitch_test

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	vswitch "github.com/vhostd/vhostd/switch"
)

const sec = int64(time.Second)

// checkCounts checks the FDB's per-port counts of dynamic entries against
// its entries.
func checkCounts(t *testing.T, f *vswitch.FDB, now int64) {
	t.Helper()
	n := map[int]int{}
	for _, e := range f.Entries(now) {
		if !e.Static {
			n[e.Port]++
		}
	}
	for port := 0; port < vswitch.MaxPorts; port++ {
		if got := f.Learned(port); got != n[port] {
			t.Fatalf("port %d: Learned %d, but it has %d dynamic entries", port, got, n[port])
		}
	}
}

// TestFDBFullBucketEviction checks who may take a slot of a full bucket:
// the port's own dynamic entries and entries idle for a while, oldest
// first; never another port's recently refreshed entry.
func TestFDBFullBucketEviction(t *testing.T) {
	f := vswitch.NewFDB(1, time.Hour) // one bucket of four
	m := func(i int) vswitch.MAC { return vswitch.MAC(0x020000000000 + i) }
	for i := 0; i < 4; i++ {
		if r := f.Learn(m(i), i, int64(i)); r != vswitch.Learned {
			t.Fatalf("learn %d: %v", i, r)
		}
	}
	// Port 4 has no entry of its own, and the others are fresh.
	if r := f.Learn(m(4), 4, sec); r != vswitch.LearnFull {
		t.Fatalf("a new port evicted a fresh entry of another: %v", r)
	}
	for i := 0; i < 4; i++ {
		if f.Lookup(m(i)) != i {
			t.Fatalf("entry %d lost", i)
		}
	}
	// Port 1 may replace its own entry.
	if r := f.Learn(m(5), 1, sec); r != vswitch.Learned || f.Lookup(m(1)) != -1 || f.Lookup(m(5)) != 1 {
		t.Fatalf("own entry not replaced: %v", r)
	}
	if f.Evictions() != 1 {
		t.Fatalf("evictions %d, want 1", f.Evictions())
	}
	// Later, the idle ones may go: the oldest first (port 0's, seen at 0).
	late := 30 * sec
	f.Learn(m(2), 2, late) // port 2 is active again
	if r := f.Learn(m(4), 4, late); r != vswitch.Learned || f.Lookup(m(0)) != -1 || f.Lookup(m(4)) != 4 {
		t.Fatalf("idle entry not evicted: %v", r)
	}
	if f.Lookup(m(2)) != 2 {
		t.Fatal("a refreshed entry was evicted")
	}
	checkCounts(t, f, late)
}

func TestFDBPinned(t *testing.T) {
	f := vswitch.NewFDB(1, 10*time.Second) // one bucket of four
	a := vswitch.MAC(0x02000000000a)
	if err := f.Pin(a, 0, 0); err != nil {
		t.Fatal(err)
	}
	if r := f.Learn(a, 1, sec); r != vswitch.LearnRefused || f.Lookup(a) != 0 {
		t.Fatalf("pinned address moved: %v, on port %d", r, f.Lookup(a))
	}
	if r := f.Learn(a, 0, sec); r != vswitch.Learned {
		t.Fatalf("own pinned address: %v", r)
	}
	if err := f.Pin(a, 1, 0); !errors.Is(err, vswitch.ErrPinnedElsewhere) {
		t.Fatalf("pinned to two ports: %v", err)
	}
	if f.Pinnable(a, 1) || !f.Pinnable(a, 0) {
		t.Fatal("Pinnable disagrees with Pin")
	}
	// Never aged, and never evicted, even by its own port's new addresses.
	f.Age(1000 * sec)
	for i := 0; i < 100; i++ {
		f.Learn(vswitch.MAC(0x020000000100+i), i%3, 2000*sec+int64(i))
	}
	if f.Lookup(a) != 0 {
		t.Fatal("pinned address aged or evicted")
	}
	// Pinning evicts a dynamic entry; a bucket of pinned addresses is full.
	for i := 1; i < 4; i++ {
		if err := f.Pin(a+vswitch.MAC(i), i, 0); err != nil {
			t.Fatalf("pin %d: %v", i, err)
		}
	}
	if err := f.Pin(a+4, 4, 0); !errors.Is(err, vswitch.ErrBucketFull) || f.Pinnable(a+4, 4) {
		t.Fatalf("fifth pin in a bucket of four: %v", err)
	}
	if r := f.Learn(a+5, 5, 3000*sec); r != vswitch.LearnFull {
		t.Fatalf("learned into a bucket of pinned addresses: %v", r)
	}
	checkCounts(t, f, 3000*sec)
	var static int
	for _, e := range f.Entries(0) {
		if e.Static {
			static++
		}
	}
	if static != 4 {
		t.Fatalf("%d static entries, want 4", static)
	}
	f.Unpin(a, 1) // not its port: stays
	if f.Lookup(a) != 0 {
		t.Fatal("unpinned by another port")
	}
	f.Unpin(a, 0)
	if f.Lookup(a) != -1 {
		t.Fatal("not unpinned")
	}
}

func TestFDBLearnLimit(t *testing.T) {
	f := vswitch.NewFDB(1024, 10*time.Second)
	f.SetLimit(2, 10)
	var limited int
	for i := 0; i < 20; i++ {
		switch r := f.Learn(vswitch.MAC(0x020000000000+i), 2, 0); r {
		case vswitch.LearnLimited:
			limited++
		case vswitch.Learned:
		default:
			t.Fatalf("learn %d: %v", i, r)
		}
	}
	if limited != 10 || f.Learned(2) != 10 {
		t.Fatalf("limited %d, learned %d; want 10 and 10", limited, f.Learned(2))
	}
	// A port at its limit may not take an address from another port.
	other := vswitch.MAC(0x020000001000)
	f.Learn(other, 3, 0)
	if r := f.Learn(other, 2, sec); r != vswitch.LearnLimited || f.Lookup(other) != 3 {
		t.Fatalf("move to a port at its limit: %v", r)
	}
	// Known addresses are refreshed at the limit; aging makes room.
	if r := f.Learn(vswitch.MAC(0x020000000000), 2, 5*sec); r != vswitch.Learned {
		t.Fatalf("refresh at the limit: %v", r)
	}
	f.Age(12 * sec)
	if f.Learned(2) != 1 {
		t.Fatalf("after aging port 2 holds %d, want 1", f.Learned(2))
	}
	checkCounts(t, f, 12*sec)
	f.Flush(2)
	if f.Learned(2) != 0 {
		t.Fatal("flush kept the count")
	}
}

// TestFDBFloodKeepsOtherPorts floods the table with 100k random source
// addresses from one port: the pinned and recently active entries of the
// other ports must all survive, and the flooding port hold no more than
// its limit; with no limit, still no entry of another port is lost.
func TestFDBFloodKeepsOtherPorts(t *testing.T) {
	for _, limit := range []int{1024, 0} {
		f := vswitch.NewFDB(8192, 300*time.Second)
		pinned := vswitch.MAC(0x02000000000a)
		if err := f.Pin(pinned, 0, 0); err != nil {
			t.Fatal(err)
		}
		var active []vswitch.MAC
		for i := 0; i < 500; i++ {
			m := vswitch.MAC(0x525400000000 + i*7919)
			if f.Learn(m, 1, 0) != vswitch.Learned {
				t.Fatalf("learn %v", m)
			}
			active = append(active, m)
		}
		f.SetLimit(2, limit)
		rng := rand.New(rand.NewPCG(1, 2))
		results := map[vswitch.LearnResult]int{}
		for i := 0; i < 100_000; i++ {
			now := int64(i) * 50_000 // 100k frames over 5s
			m := vswitch.MAC(rng.Uint64()&(1<<48-1)) &^ (1 << 40)
			results[f.Learn(m, 2, now)]++
			// Port 1's stations keep talking (refreshed each second).
			if i%20_000 == 0 {
				for _, a := range active {
					f.Learn(a, 1, now)
				}
			}
			if r := f.Learn(pinned, 2, now); i%1000 == 0 && r != vswitch.LearnRefused {
				t.Fatalf("pinned address moved: %v", r)
			}
		}
		if f.Lookup(pinned) != 0 {
			t.Fatalf("limit %d: pinned entry lost", limit)
		}
		for _, a := range active {
			if f.Lookup(a) != 1 {
				t.Fatalf("limit %d: active entry %v of port 1 now on %d", limit, a, f.Lookup(a))
			}
		}
		if limit > 0 && (f.Learned(2) > limit || results[vswitch.LearnLimited] == 0) {
			t.Fatalf("limit %d: port 2 holds %d, results %v", limit, f.Learned(2), results)
		}
		// Without a limit the flood fills the table and then churns
		// through its own entries.
		if limit == 0 && (f.Evictions() == 0 || f.Learned(2) < 4096) {
			t.Fatalf("no limit: the flood did not fill the table: holds %d, %d evictions", f.Learned(2), f.Evictions())
		}
		if f.Learned(1) != len(active) {
			t.Fatalf("limit %d: port 1 holds %d, want %d", limit, f.Learned(1), len(active))
		}
		checkCounts(t, f, 5*sec)
		t.Logf("limit %d: port 2 holds %d; results %v; evictions %d", limit, f.Learned(2), results, f.Evictions())
	}
}

// The FDB counts what it learned anew, moved and evicted; a refresh of a
// known address counts nothing.
func TestFDBTotals(t *testing.T) {
	f := vswitch.NewFDB(1, time.Hour) // one bucket of four
	m := func(i int) vswitch.MAC { return vswitch.MAC(0x020000000000 + i) }
	for i := 0; i < 4; i++ {
		f.Learn(m(i), 0, 0)
	}
	f.Learn(m(0), 0, 2*sec) // refresh
	f.Learn(m(1), 1, 2*sec) // move
	f.Learn(m(4), 0, 3*sec) // port 0 evicts one of its own
	if l, mv, ev := f.Learns(), f.Moves(), f.Evictions(); l != 5 || mv != 1 || ev != 1 {
		t.Fatalf("learned %d, moved %d, evicted %d; want 5, 1, 1", l, mv, ev)
	}
}
