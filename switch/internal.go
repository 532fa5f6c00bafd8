package vswitch

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// Bugs of vhostd's own on the data path.
//
// A runtime error (an index out of range, a nil dereference) while a
// poller forwards a VM port's burst is a bug in vhostd that the port's
// frames led the data path to; in the transmit into a VM port, which
// walks that port's own receive rings and buffers, the receiver's rings
// did. The one found so far was a guest's header-only chain after a
// frame to a known address. Ending the process would cut every guest
// off for a bug one guest found; instead the poller treats it as it
// treats a fault in that guest's memory: the port's rings are withdrawn
// and never touched again, its connection is dropped (the frontend may
// reconnect), the frames of the burst are counted as internal_error on
// it, the other ports' queues the burst was cut short in are repaired
// (settle), and the loop starts again. The log line has the error and
// its stack, for the bug report.
//
// Two limits keep that from hiding a bug that is not one port's doing:
// only a runtime error in a VM port's part of a burst is recovered (a
// panic anywhere else, the uplink's part included, or one raised on
// purpose, still ends the process), and errors pinned on a third port
// within a minute end it too, as a bug every guest meets would
// otherwise drop one guest after another. (With one or two VM ports
// that limit cannot trip; the guests meeting such a bug are dropped
// whenever they meet it, which a restart would not cure either.)

// bugWindow and bugPorts: errors pinned on bugPorts different ports within
// bugWindow end the process.
const (
	bugWindow = time.Minute
	bugPorts  = 3
)

// bugLog remembers which ports internal errors were pinned on, and when.
type bugLog struct {
	mu   sync.Mutex
	seen []bugSeen
}

type bugSeen struct {
	port *VMPort
	at   time.Time
}

// note records an error pinned on v at now and reports whether the
// process may go on: false once bugPorts different ports had one within
// bugWindow.
func (b *bugLog) note(v *VMPort, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.seen[:0]
	for _, s := range b.seen {
		if now.Sub(s.at) < bugWindow && s.port != v {
			kept = append(kept, s)
		}
	}
	b.seen = append(kept, bugSeen{v, now})
	return len(b.seen) < bugPorts
}

// InternalError is what a VM port's OnFault is given when a bug of
// vhostd's cut the port's burst short: Err is the runtime error.
type InternalError struct {
	Err runtime.Error
	Mem *guestmem.Memory // the memory the port's rings ran over
}

// GuestMemory returns Mem: vhost's Server.Drop drops the connection only
// if its rings still run over it.
func (e *InternalError) GuestMemory() *guestmem.Memory { return e.Mem }

func (e *InternalError) Error() string {
	return fmt.Sprintf("internal error in vhostd while forwarding the port's frames: %v", e.Err)
}

func (e *InternalError) Unwrap() error { return e.Err }

// internalError pins r, recovered from p's loop and not a guest memory
// fault, on the VM port whose burst p was forwarding or, if the error
// came while p transmitted into a VM port (which walks that port's own
// receive rings and buffers), on that port, and returns the port. It
// panics again with r when r is not a runtime error, when neither is a
// VM port, or when bugLog says the process must not go on.
func (p *poller) internalError(r any, log *logrus.Entry) *VMPort {
	re, ok := r.(runtime.Error)
	if !ok {
		panic(r)
	}
	var v *VMPort
	var rings *vhost.Rings // those the port's part of the burst ran over
	if d := p.txDst; d >= 0 {
		dv, vm := p.t.ports[d].(*VMPort)
		if !vm {
			panic(r) // the uplink's transmit: not a guest's doing
		}
		v, rings = dv, dv.rings.Load()
	} else if l, vm := p.busy.(*vmLane); vm {
		v, rings = l.v, l.cur
	} else {
		panic(r)
	}
	stack := string(debug.Stack())
	if !p.s.bugs.note(v, time.Now()) {
		log.WithFields(logrus.Fields{"port": v.Name(), "stack": stack}).Errorf("internal error in vhostd: %v; errors on %d ports within %v: not one guest's doing, exiting", re, bugPorts, bugWindow)
		panic(r)
	}
	v.counters.InternalErrors.Add(1)
	if rings == nil {
		// No rings ran (a burst of announcements alone): nothing to
		// withdraw, and no connection this error can be pinned on.
		v.log.WithFields(logrus.Fields{"poller": p.id, "stack": stack}).Errorf("internal error in vhostd while forwarding this port's frames: %v (please report this with the stack)", re)
		return v
	}
	v.withdraw(rings.Mem)
	v.log.WithFields(logrus.Fields{"poller": p.id, "stack": stack}).Errorf("internal error in vhostd while forwarding this port's frames: %v; dropping the connection (please report this with the stack)", re)
	if f := v.OnFault; f != nil {
		go f(&InternalError{Err: re, Mem: rings.Mem})
	}
	return v
}
