package vhost

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// Guest memory that faults.
//
// A frontend may ftruncate the memfd behind its memory after SET_MEM_TABLE
// (guestmem.Map checks the size only when mapping); the next access is
// SIGBUS. The data path recovers such faults on its pollers and asks, via
// the daemon, for the connection to be dropped: Server.Drop. The control
// path touches guest memory too (virtqueue.New reads the rings' indices,
// the backend's Publish writes the used ring's flags): each request is
// handled with SetPanicOnFault and a recover that turns a fault in the
// device's memory into an error, which drops the connection as any
// protocol error does. Either way only that frontend's connection ends;
// the socket accepts a new one.

// Drop closes the active frontend connection because of err, which its
// serving goroutine then reports as the reason it closed the connection
// before tearing the device down as for any error; the socket then
// accepts a new frontend. An error that names the guest memory it is
// about (a *guestmem.Fault, or any with a GuestMemory method) drops the
// connection only if that memory is the one the connection's rings last ran over,
// so a late report cannot drop a frontend that has connected since (or
// one whose memory was replaced since, which no longer faults).
//
// Drop does not wait for the teardown, and may be called from any
// goroutine; a poller must still not call it while the control path may
// wait for that poller (call it on a goroutine of its own).
func (s *Server) Drop(err error) {
	s.mu.Lock()
	g := s.conn
	s.mu.Unlock()
	if g == nil {
		return
	}
	var f interface{ GuestMemory() *guestmem.Memory }
	if errors.As(err, &f) {
		if m := f.GuestMemory(); m != nil && m != g.mem.Load() {
			s.log.WithError(err).Debug("fault reported for memory the connection no longer uses: not dropping it")
			return
		}
	}
	g.drop(err)
}

// connGuard is one connection as Drop sees it. It stands in for the
// server's Backend in the connection's device, to learn which memory the
// device hands the data path.
type connGuard struct {
	Backend
	uc  *net.UnixConn
	mem atomic.Pointer[guestmem.Memory] // of the last rings published

	mu  sync.Mutex
	err error // why Drop closed uc
}

// Publish implements Backend.
func (g *connGuard) Publish(r *Rings) {
	if r != nil {
		g.mem.Store(r.Mem)
	}
	g.Backend.Publish(r)
}

func (g *connGuard) drop(err error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = err
	}
	g.mu.Unlock()
	g.uc.Close() // the serving goroutine's read fails, and it tears down
}

// track makes uc the connection Drop acts on and returns its guard, to be
// the connection's device's backend.
func (s *Server) track(uc *net.UnixConn) *connGuard {
	g := &connGuard{Backend: s.backend, uc: uc}
	s.mu.Lock()
	s.conn = g
	s.mu.Unlock()
	return g
}

// untrack ends Drop's hold on the connection of g once its loop has
// returned with err, and returns why the connection ends: the reason Drop
// gave, if it closed it, rather than the read error that closing caused.
func (s *Server) untrack(g *connGuard, err error) error {
	s.mu.Lock()
	if s.conn == g {
		s.conn = nil
	}
	s.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	return err
}

// guard runs f, a piece of the device's work on the connection's
// goroutine, and returns a *guestmem.Fault if it faulted on the device's
// guest memory, or an *InternalError if it met a runtime error (an index
// out of range, a nil dereference: a bug of vhostd's that this
// frontend's requests reached), logged with its stack. Either ends this
// connection only. Any other panic (a fault outside the device's memory,
// one raised on purpose) goes on and ends the process.
func (d *device) guard(f func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if addr, ok := guestmem.FaultAddr(r); ok {
				if !d.mem.Contains(addr) {
					panic(r)
				}
				err = &guestmem.Fault{Addr: addr, Mem: d.mem}
				return
			}
			re, ok := r.(runtime.Error)
			if !ok {
				panic(r)
			}
			d.log.WithField("stack", string(debug.Stack())).Errorf("internal error in vhostd handling the frontend's request: %v; dropping the connection (please report this with the stack)", re)
			err = &InternalError{Err: re}
		}
	}()
	f()
	return nil
}

// InternalError is a bug of vhostd's that a connection's requests reached
// (Err, the runtime error): the connection ends, the daemon goes on.
type InternalError struct {
	Err runtime.Error
}

func (e *InternalError) Error() string {
	return fmt.Sprintf("internal error in vhostd: %v", e.Err)
}

func (e *InternalError) Unwrap() error { return e.Err }

// handleGuarded is handle, with a fault on the guest's memory turned into
// an error, which drops the connection. The device may be left half
// updated: the teardown that follows copes (see resetGuarded).
func (d *device) handleGuarded(m *Message) (reply []byte, err error) {
	if ferr := d.guard(func() { reply, err = d.handle(m) }); ferr != nil {
		return nil, ferr
	}
	return reply, err
}

// resetGuarded is reset for a connection's teardown: the backend's Publish
// may touch the guest's memory, which may fault, on the way (or meet a bug
// of ours, an internal error). reset is idempotent, and a second round
// finds the rings already withdrawn, so it is run again; after a few
// failures the rest is left to the process's end rather than risk more.
func (d *device) resetGuarded(log *logrus.Entry) {
	for i := 0; i < 3; i++ {
		err := d.guard(d.reset)
		if err == nil {
			return
		}
		log.WithError(err).Warn("tearing the device down was cut short; trying again")
	}
	log.Error("tearing the device down keeps failing: leaving the device's memory and fds")
}
