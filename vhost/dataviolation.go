package vhost

import (
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue"
)

// Violations found on the data path: the queues count what they tolerate
// and record what broke them (virtqueue's violation.go), at no cost while
// the driver behaves; the control path reads them when it builds a report.
// A queue lives only until the next change of the device's rings, so what
// each ring's queues saw is added up here when they are stopped, and the
// running queues' counts are added on top whenever Status is asked.
//
// Kicks on a disabled ring are found without the data path, which never
// watches such a ring: the kick eventfd's counter, which nothing drains
// (the pollers never read kick fds, see vswitch's NoDrain), is read
// through /proc/self/fdinfo, which neither blocks nor changes it, when the
// ring is disabled and again later (see device.checkKicks).

// Kinds of data-path violation vhost itself names (the queue's own are
// named by virtqueue.Violation).
const (
	kindQueueBroken       = "queue_broken"
	kindKickWhileDisabled = "kick_while_disabled"
)

const (
	specKickTransmit = "virtio 1.2, 3.1.1 (the driver MUST NOT send any buffer available notifications to the device before setting DRIVER_OK) and 5.1.6.5.6.1 (the driver MUST NOT queue packets on transmit queues greater than virtqueue_pairs)"
	specKickReceive  = "virtio 1.2, 3.1.1 (the driver MUST NOT send any buffer available notifications to the device before setting DRIVER_OK)"
)

// ringViolations is what one ring's queues saw on a connection.
type ringViolations struct {
	kinds [virtqueue.NumViolations]virtqueue.ViolationRecord
	// broken counts the queues the walker (or a bad avail index) broke,
	// the first one's reason and place kept.
	broken       virtqueue.ViolationRecord
	brokenWalker bool
	brokenErr    error
	// kicks counts the kicks while the ring was disabled; First is when
	// the control path first noticed one.
	kicks virtqueue.ViolationRecord
}

// addRecord adds r to acc, keeping the earlier first occurrence.
func addRecord(acc *virtqueue.ViolationRecord, r virtqueue.ViolationRecord) {
	if r.Count == 0 {
		return
	}
	if acc.Count == 0 || r.First.Before(acc.First) {
		n := acc.Count
		*acc = r
		acc.Count += n
		return
	}
	acc.Count += r.Count
}

// addQueue adds what the queue of ring saw. A packed queue counts no
// tolerated violations (its walker has no direction check yet); what
// broke it is recorded as for a split one.
func (rv *ringViolations) addQueue(ring *Ring) {
	var err error
	var rec virtqueue.ViolationRecord
	var walker bool
	if q := ring.Queue; q != nil {
		for k, r := range q.Violations() {
			addRecord(&rv.kinds[k], r)
		}
		err, rec, walker = q.BrokenRecord()
	} else {
		err, rec, walker = ring.Packed.BrokenRecord()
	}
	if err != nil && virtqueue.BreakSpec(err) != "" {
		if rv.broken.Count == 0 || rec.First.Before(rv.broken.First) {
			rv.brokenWalker, rv.brokenErr = walker, err
		}
		addRecord(&rv.broken, rec)
	}
}

// ringDir names what a ring is for the driver: even rings are its receive
// queues, odd ones its transmit queues.
func ringDir(i int) string {
	if i%2 == 0 {
		return "receive"
	}
	return "transmit"
}

// firstPlace describes the first occurrence's place in its chain.
func firstPlace(r virtqueue.ViolationRecord) string {
	table := ""
	if r.Indirect {
		table = " of its indirect table"
	}
	return fmt.Sprintf("first in the chain at head %d, descriptor %d%s, flags %#x", r.Head, r.Desc, table, r.Flags)
}

// entries appends rv's violations on ring i to out.
func (rv *ringViolations) entries(i int, out []Violation) []Violation {
	add := func(kind, what, spec string, r virtqueue.ViolationRecord) {
		ring := i
		out = append(out, Violation{Time: r.First, Ring: &ring, Kind: kind, Count: r.Count,
			What: fmt.Sprintf("ring %d (%s): %s", i, ringDir(i), what), Spec: spec})
	}
	for k, r := range rv.kinds {
		if r.Count == 0 {
			continue
		}
		v := virtqueue.Violation(k)
		what := v.Describe()
		if v == virtqueue.AvailFlags {
			what += fmt.Sprintf(" (first %#x)", r.Flags)
		} else {
			what += "; " + firstPlace(r)
		}
		add(v.String(), what, v.Spec(), r)
	}
	if r := rv.broken; r.Count > 0 {
		what := "queue broken: " + rv.brokenErr.Error()
		if rv.brokenWalker {
			what += "; " + firstPlace(r)
		}
		add(kindQueueBroken, what, virtqueue.BreakSpec(rv.brokenErr), r)
	}
	if r := rv.kicks; r.Count > 0 {
		spec := specKickTransmit
		if i%2 == 0 {
			spec = specKickReceive
		}
		add(kindKickWhileDisabled, fmt.Sprintf("kicked %d times while started but disabled (before SET_VRING_ENABLE 1, or after SET_VRING_ENABLE 0)", r.Count), spec, r)
	}
	return out
}

// kickWatch follows the kick eventfd of a started but disabled ring.
type kickWatch struct {
	ring int
	gen  uint64 // the ring's kickGen when the watch began
	fd   int    // a duplicate of the kick fd, the watch's own
	// mark is the eventfd's count when it was last taken into account;
	// noticed when Status first saw it beyond (unix nanoseconds, 0: not
	// yet).
	mark    atomic.Uint64
	noticed atomic.Int64
}

// newKickWatch starts watching kick, the eventfd of ring i.
func newKickWatch(i int, kick int, gen uint64) (*kickWatch, error) {
	fd, err := unix.FcntlInt(uintptr(kick), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup kick fd: %w", err)
	}
	n, err := eventfdCount(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	w := &kickWatch{ring: i, gen: gen, fd: fd}
	w.mark.Store(n)
	return w, nil
}

// liveKicks are the kicks watched rings have had since their marks, by
// watch, read from the eventfds.
type liveKicks map[*kickWatch]uint64

// readKicks reads the kicks of watches (nil ones skipped) since their
// marks.
func readKicks(watches []*kickWatch) liveKicks {
	var out liveKicks
	for _, w := range watches {
		if w == nil {
			continue
		}
		n, err := eventfdCount(w.fd)
		if m := w.mark.Load(); err == nil && n > m {
			if out == nil {
				out = liveKicks{}
			}
			out[w] = n - m
		}
	}
	return out
}

// checkKicks adds the kicks each disabled ring has had since it was last
// checked to its violations, and moves the marks.
//
// A frontend may send SET_VRING_ENABLE and kick the ring at once, before
// vhostd has read the request. So kicks are taken into account only when
// no request is waiting (d.pending reports one): the eventfds are read
// first, then the socket; a kick made after an enabling request was sent
// then finds the request either still waiting (nothing is counted yet) or
// handled (the ring is enabled, its watch gone). Called after each request
// once the watches follow the rings (syncKickWatches), and when the
// frontend has hung up with every request handled (pending nil).
func (d *device) checkKicks() {
	live := readKicks(d.watches[:])
	if d.pending != nil && d.pending() {
		return
	}
	now := time.Now()
	for _, w := range d.watches {
		if w == nil {
			continue
		}
		n := live[w]
		if n == 0 {
			continue
		}
		at := now
		if t := w.noticed.Load(); t != 0 {
			at = time.Unix(0, t)
		}
		addRecord(&d.ringViol[w.ring].kicks, virtqueue.ViolationRecord{Count: n, First: at})
		w.mark.Add(n)
	}
	// A frontend that drained an eventfd: start again from its count.
	for _, w := range d.watches {
		if w == nil {
			continue
		}
		if n, err := eventfdCount(w.fd); err == nil && n < w.mark.Load() {
			w.mark.Store(n)
		}
	}
}

// syncKickWatches watches the kick fd of every started but disabled ring,
// and stops watching the others (their fds are closed by the server once
// no Status can read them: see Server.setStatus).
func (d *device) syncKickWatches() {
	for i := range d.rings {
		r := &d.rings[i]
		want := r.started && r.kick >= 0 && !r.enabled
		w := d.watches[i]
		if w != nil && (!want || w.gen != r.kickGen) {
			d.retired = append(d.retired, w)
			d.watches[i], w = nil, nil
		}
		if want && w == nil {
			nw, err := newKickWatch(i, r.kick, r.kickGen)
			if err != nil {
				d.log.WithError(err).WithField("ring", i).Debug("cannot watch the kicks of a disabled ring")
				continue
			}
			d.watches[i] = nw
		}
	}
}

// dataViolations returns the data-path violations of rings (as added up
// when their queues stopped) plus what the running queues and the watched
// kick fds (live) show now.
func dataViolations(rings []ringViolations, queues map[int]*Ring, live liveKicks) []Violation {
	var out []Violation
	now := time.Now().UnixNano()
	for i := range rings {
		rv := rings[i] // a copy: the live counts are added to it
		if q := queues[i]; q != nil {
			rv.addQueue(q)
		}
		for w, n := range live {
			if w.ring == i {
				w.noticed.CompareAndSwap(0, now)
				addRecord(&rv.kicks, virtqueue.ViolationRecord{Count: n, First: time.Unix(0, w.noticed.Load())})
			}
		}
		out = rv.entries(i, out)
	}
	return out
}

// withDataViolations returns st with the data-path violations added to its
// list, all in the order they were first seen, and to the count.
func withDataViolations(st Status, dv []Violation) Status {
	if len(dv) == 0 {
		return st
	}
	all := make([]Violation, 0, len(st.Violations)+len(dv))
	all = append(append(all, st.Violations...), dv...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	st.Violations = all
	for _, v := range dv {
		st.ViolationsSeen += int(v.Count)
	}
	return st
}

// violationEvents returns trace events for the data-path violations whose
// count grew since they were last traced. s.mu must be held.
func (s *Server) violationEvents(vs []Violation) []TraceEvent {
	var out []TraceEvent
	for _, v := range vs {
		if v.Ring == nil {
			continue
		}
		key := strconv.Itoa(*v.Ring) + "/" + v.Kind
		if v.Count <= s.traced[key] {
			continue
		}
		if s.traced == nil {
			s.traced = map[string]uint64{}
		}
		s.traced[key] = v.Count
		out = append(out, TraceEvent{Kind: TraceViolation, Fields: Fields{{"ring", strconv.Itoa(*v.Ring)}, {"kind", v.Kind},
			{"count", strconv.FormatUint(v.Count, 10)}, {"what", v.What}, {"spec", v.Spec}}})
	}
	return out
}
