package vswitch

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// MaxPorts is the most ports one switch holds.
const MaxPorts = 256

// Config sets up a switch.
type Config struct {
	Pollers int           // poller goroutines (OS threads); default 1
	FDBSize int           // addresses the FDB holds; default 8192
	AgeTime time.Duration // forget an address unseen this long; default 300s
	// IdleSpin is how long a poller keeps polling after the last frame
	// before it sleeps on the kick fds; default 50µs.
	IdleSpin time.Duration
	// CPUs, if set, holds one CPU per poller: poller i's thread runs on
	// CPUs[i] only. Keeping every other thread off those CPUs is the
	// caller's part (daemon/cpus).
	CPUs []int
}

func (c *Config) defaults() {
	if c.Pollers <= 0 {
		c.Pollers = 1
	}
	if c.FDBSize <= 0 {
		c.FDBSize = 8192
	}
	if c.AgeTime <= 0 {
		c.AgeTime = 300 * time.Second
	}
	if c.IdleSpin <= 0 {
		c.IdleSpin = 50 * time.Microsecond
	}
}

// portTable is the switch's port set as the data path sees it: replaced
// whole on every change, read with one atomic load per burst.
type portTable struct {
	ports [MaxPorts]Port
	n     int // highest used index + 1
}

// Switch is a learning switch and the pollers that run it.
type Switch struct {
	cfg   Config
	log   *logrus.Entry
	fdb   *FDB
	epoch time.Time // origin of the switch clock

	table   atomic.Pointer[portTable]
	pollers []*poller

	bugs bugLog // internal errors the pollers recovered from (internal.go)

	secMu sync.Mutex // serialises changes of sec's policies and locks
	sec   [MaxPorts]portSec

	mu      sync.Mutex        // guards port membership, owners, and start/stop
	owners  map[int][]*poller // by port index: the owner of each receiver
	running bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

// New returns a stopped switch.
func New(cfg Config, log *logrus.Entry) (*Switch, error) {
	cfg.defaults()
	s := &Switch{cfg: cfg, log: log, fdb: NewFDB(cfg.FDBSize, cfg.AgeTime), epoch: time.Now(), owners: map[int][]*poller{}}
	s.table.Store(&portTable{})
	if len(cfg.CPUs) != 0 && len(cfg.CPUs) != cfg.Pollers {
		return nil, fmt.Errorf("CPUs for %d pollers, one each, but %d given", cfg.Pollers, len(cfg.CPUs))
	}
	for i := 0; i < cfg.Pollers; i++ {
		p, err := newPoller(s, i)
		if err != nil {
			for _, q := range s.pollers {
				q.close()
			}
			return nil, fmt.Errorf("poller %d: %w", i, err)
		}
		p.cpu = -1
		if len(cfg.CPUs) != 0 {
			p.cpu = cfg.CPUs[i]
		}
		s.pollers = append(s.pollers, p)
	}
	return s, nil
}

// now is the switch clock in nanoseconds.
func (s *Switch) now() int64 { return int64(time.Since(s.epoch)) }

// Start runs the pollers and the FDB ager.
func (s *Switch) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return
	}
	s.running = true
	s.stop = make(chan struct{})
	for _, p := range s.pollers {
		s.wg.Add(1)
		go func(p *poller) {
			defer s.wg.Done()
			p.run()
		}(p)
	}
	s.wg.Add(2)
	go s.ager()
	go s.watchdog(s.stop)
}

// Stop stops the pollers and waits for them.
func (s *Switch) Stop() {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return
	}
	s.running = false
	close(s.stop)
	for _, p := range s.pollers {
		p.stopping.Store(true)
		p.wake()
	}
	s.mu.Unlock()
	s.wg.Wait()
	for _, p := range s.pollers {
		p.stopping.Store(false)
	}
}

// Close stops the switch and releases the pollers' fds.
func (s *Switch) Close() {
	s.Stop()
	for _, p := range s.pollers {
		p.close()
	}
}

func (s *Switch) ager() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.fdb.Age(s.now())
		}
	}
}

// AddPort attaches p, with no address policy, and returns its index. See
// AddSecuredPort.
func (s *Switch) AddPort(p Port) (int, error) { return s.AddSecuredPort(p, PortSecurity{}) }

// AddSecuredPort attaches p under the address policy sec and returns its
// index. Its first receiver goes to the poller with the fewest ports, its
// next ones (lanes of a multi-queue port) to the pollers after that one in
// turn: the first lane carries traffic whatever queues the frontend runs
// (a guest with one queue pair uses only it), so single-queue ports spread
// over the pollers as whole ports do, and the lanes of a multi-queue port
// each get a poller.
func (s *Switch) AddSecuredPort(p Port, sec PortSecurity) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.table.Load()
	idx := -1
	for i := 0; i < MaxPorts; i++ {
		if old.ports[i] == nil {
			idx = i
			break
		}
		if old.ports[i].Name() == p.Name() {
			return -1, fmt.Errorf("a port named %q exists already", p.Name())
		}
	}
	if idx < 0 {
		return -1, fmt.Errorf("switch is full (%d ports)", MaxPorts)
	}
	for i := idx; i < old.n; i++ {
		if old.ports[i] != nil && old.ports[i].Name() == p.Name() {
			return -1, fmt.Errorf("a port named %q exists already", p.Name())
		}
	}
	// No poller sees idx until the table below is stored: the policy is
	// in force from the port's first frame.
	if err := s.secure(idx, sec); err != nil {
		s.fdb.Flush(idx)
		s.unsecure(idx)
		return -1, err
	}
	p.Attach(&portControl{s: s, idx: idx})
	rs, err := receivers(p)
	if err != nil {
		s.fdb.Flush(idx)
		s.unsecure(idx)
		return -1, err
	}
	nt := *old
	nt.ports[idx] = p
	if idx >= nt.n {
		nt.n = idx + 1
	}
	base := 0
	for i, q := range s.pollers {
		if q.ports < s.pollers[base].ports {
			base = i
		}
	}
	s.pollers[base].ports++
	var owners []*poller
	for k, r := range rs {
		q := s.pollers[(base+k)%len(s.pollers)]
		owners = append(owners, q)
		q.addOwned(unit{idx: idx, r: r, first: k == 0})
	}
	s.owners[idx] = owners
	s.table.Store(&nt)
	s.changed()
	return idx, nil
}

// RemovePort detaches the port at idx and forgets its addresses. When it
// returns, no poller touches the port.
func (s *Switch) RemovePort(idx int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.table.Load()
	if idx < 0 || idx >= MaxPorts || old.ports[idx] == nil {
		return
	}
	nt := *old
	nt.ports[idx] = nil
	for nt.n > 0 && nt.ports[nt.n-1] == nil {
		nt.n--
	}
	for _, p := range s.pollers {
		if p.removeOwned(idx) {
			p.ports--
		}
	}
	delete(s.owners, idx)
	s.table.Store(&nt)
	s.changed()
	s.fdb.Flush(idx)
	s.unsecure(idx)
}

// changed bumps every poller's configuration generation, wakes them, and
// waits until none can still hold state from before the call: each must
// acknowledge the new generation, which it does at the top of its loop,
// where it holds nothing and loads everything afresh, unless it is parked
// (asleep or stopped), when it holds nothing already. Go's atomics are
// sequentially consistent: a poller that unparks after we saw it parked
// then loads the new generation, and with it the new state.
func (s *Switch) changed() {
	want := make([]uint64, len(s.pollers))
	for i, p := range s.pollers {
		want[i] = p.gen.Add(1)
		p.wake()
	}
	for i, p := range s.pollers {
		for spins := 0; p.ack.Load() < want[i] && !p.parked.Load(); spins++ {
			if spins < 100 {
				runtime.Gosched()
			} else {
				time.Sleep(10 * time.Microsecond)
			}
		}
	}
}

type portControl struct {
	s   *Switch
	idx int
}

func (c *portControl) Changed() { c.s.changed() }

func (c *portControl) Pollers() int { return len(c.s.pollers) }

func (c *portControl) Disconnected() { c.s.unlockMAC(c.idx) }

// PortInfo reports one port and its counters.
type PortInfo struct {
	Index    int
	Port     Port
	Counters Snapshot
	Pollers  []int // the poller of each of the port's receivers
	Security PortSecurity
	// LockedMAC is the address the port may send from: a FixedMAC
	// port's, or the one a LearnMAC port locked to; 0 if none (yet).
	LockedMAC MAC
	// LearnedMACs is how many dynamic FDB entries the port holds.
	LearnedMACs int
}

// Ports lists the ports in index order.
func (s *Switch) Ports() []PortInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.table.Load()
	var out []PortInfo
	for i := 0; i < t.n; i++ {
		if p := t.ports[i]; p != nil {
			pi := PortInfo{Index: i, Port: p, Counters: p.Stats(), LearnedMACs: s.fdb.Learned(i)}
			pi.Security, pi.LockedMAC = s.security(i)
			for _, o := range s.owners[i] {
				pi.Pollers = append(pi.Pollers, o.id)
			}
			out = append(out, pi)
		}
	}
	return out
}

// FDBSize is how many addresses the FDB can hold.
func (s *Switch) FDBSize() int { return s.fdb.Size() }

// FDBCounts are the FDB's totals since the switch started.
type FDBCounts struct {
	Learned, Moved, Evicted uint64
}

// FDBCounts returns how many addresses the FDB learned anew, moved to
// another port, and evicted for a newcomer.
func (s *Switch) FDBCounts() FDBCounts {
	return FDBCounts{Learned: s.fdb.Learns(), Moved: s.fdb.Moves(), Evicted: s.fdb.Evictions()}
}

// LearnedMAC is one FDB entry as reported to users.
type LearnedMAC struct {
	MAC  string        `json:"mac"`
	Port string        `json:"port"`
	Age  time.Duration `json:"age_ns"` // 0 for a static entry
	// Static is set for an address pinned to its port by port security:
	// never aged, evicted, or moved by frames from other ports.
	Static bool `json:"static"`
}

// FDB lists the learned and pinned addresses, sorted by port then address.
func (s *Switch) FDB() []LearnedMAC {
	t := s.table.Load()
	var out []LearnedMAC
	for _, e := range s.fdb.Entries(s.now()) {
		name := fmt.Sprintf("#%d", e.Port)
		if e.Port >= 0 && e.Port < MaxPorts && t.ports[e.Port] != nil {
			name = t.ports[e.Port].Name()
		}
		out = append(out, LearnedMAC{MAC: e.MAC.String(), Port: name, Age: e.Age, Static: e.Static})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].MAC < out[j].MAC
	})
	return out
}
