package vswitch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
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

// macsOf returns the destination and source addresses of an Ethernet
// header's first 12 bytes, b[0:12], in two loads rather than twelve (it
// runs once per frame).
func macsOf(b []byte) (dst, src MAC) {
	_ = b[11]
	return MAC(binary.BigEndian.Uint64(b[0:8]) >> 16), MAC(binary.BigEndian.Uint64(b[4:12]) & (1<<48 - 1))
}

// ParseMAC parses an Ethernet address written as six colon-separated hex
// octets (or any form net.ParseMAC takes for 48 bits).
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return 0, fmt.Errorf("%q is not an Ethernet address like 02:00:00:00:00:0a", s)
	}
	return macOf(hw), nil
}

// Multicast reports whether the group bit is set (broadcast included).
func (m MAC) Multicast() bool { return m&(1<<40) != 0 }

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", byte(m>>40), byte(m>>32), byte(m>>24), byte(m>>16), byte(m>>8), byte(m))
}

const bucketWays = 4

// An entry's key packs MAC, a static flag and port so that a reader sees
// all three with one load: key = mac<<16 | keyStatic? | (port+1); 0 means
// empty. Ports are below MaxPorts, so port+1 fits keyPort.
const (
	keyPort   = 0x7fff
	keyStatic = 1 << 15
)

type fdbEntry struct {
	key  atomic.Uint64
	seen atomic.Int64 // nanoseconds on the switch clock when last refreshed
}

type fdbBucket struct{ e [bucketWays]fdbEntry }

// fdbPort is the FDB's bookkeeping for one port index: how many dynamic
// entries it holds and may hold. Written under the FDB's mu; read without
// it by Learn, to refuse an address over the limit without taking mu.
type fdbPort struct {
	n   atomic.Int32
	max atomic.Int32 // 0: no limit but the table's size
}

// FDB is the forwarding database: MAC address to port index. Lookups take
// no lock; learning a new or moved address takes a mutex, as does aging.
// A refresh of a known address writes its timestamp at most once per
// refreshEvery, so a busy flow does not bounce the cache line.
//
// Entries are dynamic (learned from source addresses, aged, subject to
// eviction and per-port limits) or static (pinned by port security: never
// aged, evicted or moved, and not counted against a port's limit).
type FDB struct {
	buckets []fdbBucket
	mask    uint64
	maxAge  int64

	mu        sync.Mutex // serialises writers of keys and of ports[].n
	ports     [MaxPorts]fdbPort
	evictions atomic.Uint64
	// learns and moves count addresses learned new and moved to another
	// port (the slow path, under mu).
	learns, moves atomic.Uint64
}

const refreshEvery = int64(time.Second)

// evictIdle is how long a dynamic entry of another port must have gone
// unrefreshed before a new address may take its place in a full bucket.
// It is ten times refreshEvery, so a station that sent anything in the last
// nine seconds or so keeps its entry whatever a flood of new addresses
// does, and far below the default age (300s), so that in a table full of
// legitimate addresses an idle entry still makes room for a new one long
// before it would age out.
const evictIdle = 10 * int64(time.Second)

// LearnResult says what Learn did with an address.
type LearnResult uint8

// What Learn did.
const (
	Learned      LearnResult = iota // known, refreshed, learned or moved
	LearnRefused                    // pinned to another port: not moved
	LearnLimited                    // the port holds its limit of addresses
	LearnFull                       // its bucket holds nothing this port may evict
	numLearnResults
)

// Errors of Pin.
var (
	ErrPinnedElsewhere = errors.New("address is pinned to another port")
	ErrBucketFull      = errors.New("no room: its FDB bucket holds only pinned addresses (raise fdb_size)")
)

// NewFDB returns a table with room for about size addresses (rounded up to
// a power of two) that forgets an address not seen for maxAge.
func NewFDB(size int, maxAge time.Duration) *FDB {
	nb := 1
	for nb*bucketWays < size {
		nb <<= 1
	}
	return &FDB{buckets: make([]fdbBucket, nb), mask: uint64(nb - 1), maxAge: int64(maxAge)}
}

// Size is how many addresses the table can hold.
func (f *FDB) Size() int { return len(f.buckets) * bucketWays }

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
			return int(k&keyPort) - 1
		}
	}
	return -1
}

// SetLimit sets how many dynamic entries port may hold; 0 means no limit
// but the table's size.
func (f *FDB) SetLimit(port, max int) {
	f.ports[port].max.Store(int32(min(max, f.Size())))
}

// Learned returns how many dynamic entries port holds.
func (f *FDB) Learned(port int) int { return int(f.ports[port].n.Load()) }

// full reports whether port holds its limit of dynamic entries.
func (f *FDB) full(port int) bool {
	p := &f.ports[port]
	max := p.max.Load()
	return max > 0 && p.n.Load() >= max
}

// Learn records that m was seen on port at time now (switch clock, ns).
// A known address costs a scan of its bucket and no store but the
// occasional refresh. An address that cannot be learned (pinned
// elsewhere, the port at its limit, or no room in its bucket for it) is
// refused without taking the lock, so that a guest sending from random or
// foreign addresses does not serialise the pollers.
func (f *FDB) Learn(m MAC, port int, now int64) LearnResult {
	b := f.bucket(m)
	room := false // a free entry, or one a new address of port may take
	for i := range b.e {
		e := &b.e[i]
		k := e.key.Load()
		if k == 0 {
			room = true
			continue
		}
		if k>>16 != uint64(m) {
			room = room || f.evictable(k, e.seen.Load(), port, now)
			continue
		}
		if k&keyPort == uint64(port+1) {
			if k&keyStatic == 0 && now-e.seen.Load() >= refreshEvery {
				e.seen.Store(now)
			}
			return Learned
		}
		if k&keyStatic != 0 {
			return LearnRefused
		}
		room = true // on another port: a move, into the same entry
		break
	}
	switch {
	case f.full(port):
		return LearnLimited
	case !room:
		return LearnFull
	}
	return f.learnSlow(b, m, port, now)
}

func (f *FDB) learnSlow(b *fdbBucket, m MAC, port int, now int64) LearnResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := uint64(m)<<16 | uint64(port+1)
	var free, victim *fdbEntry
	for i := range b.e {
		e := &b.e[i]
		k := e.key.Load()
		switch {
		case k>>16 == uint64(m) && k != 0: // learned meanwhile, or moving
			old := int(k&keyPort) - 1
			switch {
			case old == port:
				return Learned
			case k&keyStatic != 0:
				return LearnRefused
			case f.full(port):
				return LearnLimited
			}
			f.ports[old].n.Add(-1)
			f.ports[port].n.Add(1)
			e.seen.Store(now)
			e.key.Store(want)
			f.moves.Add(1)
			return Learned
		case k == 0:
			if free == nil {
				free = e
			}
		case f.evictable(k, e.seen.Load(), port, now) && (victim == nil || e.seen.Load() < victim.seen.Load()):
			victim = e
		}
	}
	if f.full(port) {
		return LearnLimited
	}
	if free == nil {
		if victim == nil {
			return LearnFull
		}
		f.ports[int(victim.key.Load()&keyPort)-1].n.Add(-1)
		f.evictions.Add(1)
		free = victim
	}
	f.ports[port].n.Add(1)
	free.seen.Store(now)
	free.key.Store(want)
	f.learns.Add(1)
	return Learned
}

// evictable reports whether a new address of port may take the place of
// the entry with key k last refreshed at seen: a dynamic entry of the same
// port, or one of another port that has been idle for evictIdle. Never a
// static entry, nor another port's recently active one: a guest flooding
// the table with made-up addresses evicts only its own, and stale ones.
func (f *FDB) evictable(k uint64, seen int64, port int, now int64) bool {
	if k&keyStatic != 0 {
		return false
	}
	return int(k&keyPort)-1 == port || now-seen > evictIdle
}

// Pin makes m a static entry on port: traffic to m goes to port, frames
// from m on other ports do not move it, and it is never aged or evicted.
// A dynamic entry for m, on any port, is replaced; if m's bucket is full,
// its oldest dynamic entry gives way. It fails if m is pinned to another
// port or its bucket holds only static entries.
func (f *FDB) Pin(m MAC, port int, now int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.bucket(m)
	want := uint64(m)<<16 | keyStatic | uint64(port+1)
	var free, victim *fdbEntry
	for i := range b.e {
		e := &b.e[i]
		k := e.key.Load()
		switch {
		case k>>16 == uint64(m) && k != 0:
			if k&keyStatic != 0 {
				if k == want {
					return nil
				}
				return ErrPinnedElsewhere
			}
			f.ports[int(k&keyPort)-1].n.Add(-1)
			e.seen.Store(now)
			e.key.Store(want)
			return nil
		case k == 0:
			if free == nil {
				free = e
			}
		case k&keyStatic == 0 && (victim == nil || e.seen.Load() < victim.seen.Load()):
			victim = e
		}
	}
	if free == nil {
		if victim == nil {
			return ErrBucketFull
		}
		f.ports[int(victim.key.Load()&keyPort)-1].n.Add(-1)
		f.evictions.Add(1)
		free = victim
	}
	free.seen.Store(now)
	free.key.Store(want)
	return nil
}

// Pinnable reports, without taking the lock, whether Pin(m, port) could
// succeed: m is not pinned elsewhere and its bucket is not all static.
// The data path asks before it locks a port to an address, so that a
// guest sending from a foreign pinned address does not take the lock per
// frame.
func (f *FDB) Pinnable(m MAC, port int) bool {
	b := f.bucket(m)
	room := false
	for i := range b.e {
		k := b.e[i].key.Load()
		if k>>16 == uint64(m) && k != 0 {
			return k&keyStatic == 0 || int(k&keyPort)-1 == port
		}
		if k&keyStatic == 0 {
			room = true
		}
	}
	return room
}

// Unpin forgets m if it is pinned to port.
func (f *FDB) Unpin(m MAC, port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.bucket(m)
	want := uint64(m)<<16 | keyStatic | uint64(port+1)
	for i := range b.e {
		if b.e[i].key.Load() == want {
			b.e[i].key.Store(0)
		}
	}
}

// Age forgets every dynamic address not seen since now-maxAge.
func (f *FDB) Age(now int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for bi := range f.buckets {
		for i := range f.buckets[bi].e {
			e := &f.buckets[bi].e[i]
			if k := e.key.Load(); k != 0 && k&keyStatic == 0 && now-e.seen.Load() > f.maxAge {
				e.key.Store(0)
				f.ports[int(k&keyPort)-1].n.Add(-1)
			}
		}
	}
}

// Flush forgets every address learned on or pinned to port, and its
// limit.
func (f *FDB) Flush(port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for bi := range f.buckets {
		for i := range f.buckets[bi].e {
			e := &f.buckets[bi].e[i]
			if k := e.key.Load(); k != 0 && int(k&keyPort)-1 == port {
				e.key.Store(0)
			}
		}
	}
	f.ports[port].n.Store(0)
	f.ports[port].max.Store(0)
}

// FDBEntry is one learned or pinned address, for reporting.
type FDBEntry struct {
	MAC    MAC
	Port   int
	Age    time.Duration // since last seen; 0 for a static entry
	Static bool
}

// Entries lists the addresses with their age at now.
func (f *FDB) Entries(now int64) []FDBEntry {
	var out []FDBEntry
	for bi := range f.buckets {
		for i := range f.buckets[bi].e {
			e := &f.buckets[bi].e[i]
			if k := e.key.Load(); k != 0 {
				fe := FDBEntry{MAC: MAC(k >> 16), Port: int(k&keyPort) - 1, Static: k&keyStatic != 0}
				if !fe.Static {
					fe.Age = time.Duration(now - e.seen.Load())
				}
				out = append(out, fe)
			}
		}
	}
	return out
}

// Evictions counts addresses forgotten because their bucket was full.
func (f *FDB) Evictions() uint64 { return f.evictions.Load() }

// Learns is how many addresses were learned anew (not moves).
func (f *FDB) Learns() uint64 { return f.learns.Load() }

// Moves is how many learned addresses moved to another port.
func (f *FDB) Moves() uint64 { return f.moves.Load() }
