package vswitch

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// MAC is an Ethernet address packed into the low 48 bits of a uint64, first
// octet most significant.
type MAC uint64

func macOf(b []byte) MAC {
	return MAC(uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5]))
}

// Multicast reports whether the group bit is set (broadcast included).
func (m MAC) Multicast() bool { return m&(1<<40) != 0 }

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", byte(m>>40), byte(m>>32), byte(m>>24), byte(m>>16), byte(m>>8), byte(m))
}

const bucketWays = 4

// fdbEntry packs MAC and port so a reader sees both with one load:
// key = mac<<16 | (port+1); 0 means empty.
type fdbEntry struct {
	key  atomic.Uint64
	seen atomic.Int64 // nanoseconds on the switch clock when last refreshed
}

type fdbBucket struct{ e [bucketWays]fdbEntry }

// FDB is the forwarding database: MAC address to port index. Lookups take
// no lock; learning a new or moved address takes a mutex, as does aging.
// A refresh of a known address writes its timestamp at most once per
// refreshEvery, so a busy flow does not bounce the cache line.
type FDB struct {
	buckets []fdbBucket
	mask    uint64
	maxAge  int64

	mu        sync.Mutex // serialises writers of keys
	evictions atomic.Uint64
}

const refreshEvery = int64(time.Second)

// NewFDB returns a table with room for about size addresses (rounded up to
// a power of two) that forgets an address not seen for maxAge.
func NewFDB(size int, maxAge time.Duration) *FDB {
	nb := 1
	for nb*bucketWays < size {
		nb <<= 1
	}
	return &FDB{buckets: make([]fdbBucket, nb), mask: uint64(nb - 1), maxAge: int64(maxAge)}
}

func (f *FDB) bucket(m MAC) *fdbBucket {
	h := uint64(m) * 0x9E3779B97F4A7C15
	return &f.buckets[(h>>32)&f.mask]
}

// Lookup returns the port index for m, or -1.
func (f *FDB) Lookup(m MAC) int {
	b := f.bucket(m)
	for i := range b.e {
		k := b.e[i].key.Load()
		if k>>16 == uint64(m) && k != 0 {
			return int(k&0xffff) - 1
		}
	}
	return -1
}

// Learn records that m was seen on port at time now (switch clock, ns).
func (f *FDB) Learn(m MAC, port int, now int64) {
	b := f.bucket(m)
	want := uint64(m)<<16 | uint64(port+1)
	for i := range b.e {
		e := &b.e[i]
		if e.key.Load() == want {
			if now-e.seen.Load() >= refreshEvery {
				e.seen.Store(now)
			}
			return
		}
	}
	f.learnSlow(b, m, want, now)
}

func (f *FDB) learnSlow(b *fdbBucket, m MAC, want uint64, now int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var free, oldest *fdbEntry
	for i := range b.e {
		e := &b.e[i]
		k := e.key.Load()
		switch {
		case k>>16 == uint64(m) && k != 0: // known address, new port: it moved
			e.seen.Store(now)
			e.key.Store(want)
			return
		case k == 0:
			if free == nil {
				free = e
			}
		case oldest == nil || e.seen.Load() < oldest.seen.Load():
			oldest = e
		}
	}
	if free == nil {
		free = oldest
		f.evictions.Add(1)
	}
	free.seen.Store(now)
	free.key.Store(want)
}

// Age forgets every address not seen since now-maxAge.
func (f *FDB) Age(now int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for bi := range f.buckets {
		for i := range f.buckets[bi].e {
			e := &f.buckets[bi].e[i]
			if e.key.Load() != 0 && now-e.seen.Load() > f.maxAge {
				e.key.Store(0)
			}
		}
	}
}

// Flush forgets every address learned on port.
func (f *FDB) Flush(port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for bi := range f.buckets {
		for i := range f.buckets[bi].e {
			e := &f.buckets[bi].e[i]
			if k := e.key.Load(); k != 0 && int(k&0xffff)-1 == port {
				e.key.Store(0)
			}
		}
	}
}

// FDBEntry is one learned address, for reporting.
type FDBEntry struct {
	MAC  MAC
	Port int
	Age  time.Duration
}

// Entries lists the learned addresses with their age at now.
func (f *FDB) Entries(now int64) []FDBEntry {
	var out []FDBEntry
	for bi := range f.buckets {
		for i := range f.buckets[bi].e {
			e := &f.buckets[bi].e[i]
			if k := e.key.Load(); k != 0 {
				out = append(out, FDBEntry{MAC: MAC(k >> 16), Port: int(k&0xffff) - 1, Age: time.Duration(now - e.seen.Load())})
			}
		}
	}
	return out
}

// Evictions counts addresses forgotten because their bucket was full.
func (f *FDB) Evictions() uint64 { return f.evictions.Load() }
