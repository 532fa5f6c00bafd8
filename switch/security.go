package vswitch

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// MACMode is how a port's source addresses are checked.
type MACMode uint8

// Source address policies.
const (
	// AnyMAC lets the port send from any address (the uplink, a router).
	AnyMAC MACMode = iota
	// FixedMAC lets the port send from PortSecurity.MAC only.
	FixedMAC
	// LearnMAC locks the port to the first unicast source address it
	// sends, until its frontend disconnects (VMPort.Disconnected).
	LearnMAC
)

// PortSecurity is what a port may claim as its own: which source
// addresses it may send from, and how many addresses it may make the FDB
// learn.
type PortSecurity struct {
	Mode MACMode
	// MAC is the address of a FixedMAC port: unicast, not zero. It is
	// pinned to the port in the FDB (a static entry).
	MAC MAC
	// MaxMACs is how many dynamic FDB entries the port may hold; 0 means
	// no limit but the table's size. Frames from further addresses are
	// forwarded but their addresses not learned (fdb_learn_limited).
	MaxMACs int
}

func (ps PortSecurity) check() error {
	switch ps.Mode {
	case AnyMAC, LearnMAC:
	case FixedMAC:
		if ps.MAC == 0 || ps.MAC.Multicast() || ps.MAC >= 1<<48 {
			return fmt.Errorf("MAC %v: a port's address must be unicast and not zero", ps.MAC)
		}
	default:
		return fmt.Errorf("unknown MAC mode %d", ps.Mode)
	}
	if ps.MaxMACs < 0 {
		return fmt.Errorf("max_macs %d: use 0 (the table's size) or more", ps.MaxMACs)
	}
	return nil
}

// portSec is a port's source-address policy as the data path sees it.
type portSec struct {
	// want is what forward compares each frame's source address with,
	// loaded once per burst: 0 for any address, the pinned address, or
	// wantPending for a LearnMAC port not locked yet (no address equals
	// it, so forward takes the slow path and tries to lock).
	want atomic.Uint64
	cfg  PortSecurity // guarded by the switch's secMu
}

const wantPending = 1 << 62

// secure installs the policy of a new port at idx, before any poller can
// see it: its learning limit and, for a FixedMAC port, its static entry.
func (s *Switch) secure(idx int, ps PortSecurity) error {
	if err := ps.check(); err != nil {
		return err
	}
	s.secMu.Lock()
	defer s.secMu.Unlock()
	sec := &s.sec[idx]
	switch ps.Mode {
	case FixedMAC:
		if err := s.fdb.Pin(ps.MAC, idx, s.now()); err != nil {
			if errors.Is(err, ErrPinnedElsewhere) {
				return fmt.Errorf("MAC %v is the address of another port", ps.MAC)
			}
			return fmt.Errorf("pin MAC %v: %w", ps.MAC, err)
		}
		sec.want.Store(uint64(ps.MAC))
	case LearnMAC:
		sec.want.Store(wantPending)
	default:
		sec.want.Store(0)
	}
	sec.cfg = ps
	s.fdb.SetLimit(idx, ps.MaxMACs)
	return nil
}

// unsecure forgets the policy of the port that was at idx; its FDB
// entries, static ones included, are flushed by the caller.
func (s *Switch) unsecure(idx int) {
	s.secMu.Lock()
	defer s.secMu.Unlock()
	s.sec[idx].want.Store(0)
	s.sec[idx].cfg = PortSecurity{}
}

// lockMAC locks the LearnMAC port at idx to m, the first unicast source
// address it sent, and returns the port's new want: m if it is locked to
// m now, else what it is. It runs on the data path, once per frontend
// connection when it succeeds; a refusal (m pinned elsewhere) is decided
// without a lock, so that a guest sending from a foreign address does not
// take one per frame.
func (s *Switch) lockMAC(idx int, m MAC) uint64 {
	sec := &s.sec[idx]
	if m == 0 || m.Multicast() || !s.fdb.Pinnable(m, idx) {
		return sec.want.Load()
	}
	s.secMu.Lock()
	defer s.secMu.Unlock()
	if w := sec.want.Load(); w != wantPending {
		return w // another lane locked it first
	}
	if err := s.fdb.Pin(m, idx, s.now()); err != nil {
		return wantPending
	}
	sec.want.Store(uint64(m))
	if t := s.table.Load(); t.ports[idx] != nil {
		s.log.WithFields(logrus.Fields{"port": t.ports[idx].Name(), "mac": m.String()}).Info("port locked to the first source address its guest sent")
	}
	return uint64(m)
}

// unlockMAC forgets the address the LearnMAC port at idx locked to: its
// frontend went away, and the next one may use another address.
func (s *Switch) unlockMAC(idx int) {
	s.secMu.Lock()
	defer s.secMu.Unlock()
	sec := &s.sec[idx]
	if sec.cfg.Mode != LearnMAC {
		return
	}
	if w := sec.want.Load(); w != wantPending && w != 0 {
		s.fdb.Unpin(MAC(w), idx)
	}
	sec.want.Store(wantPending)
}

// security returns the policy of the port at idx and the address it is
// locked to (a FixedMAC port's own, or what a LearnMAC port locked to; 0
// for none).
func (s *Switch) security(idx int) (PortSecurity, MAC) {
	s.secMu.Lock()
	defer s.secMu.Unlock()
	sec := &s.sec[idx]
	w := sec.want.Load()
	if w == wantPending {
		w = 0
	}
	return sec.cfg, MAC(w)
}
