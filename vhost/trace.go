package vhost

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Trace event kinds.
const (
	TraceConnect    = "connect"    // a frontend connected (Peer says who)
	TraceDisconnect = "disconnect" // the connection ended (Error says why, if it failed)
	TraceRequest    = "request"    // a request arrived, decoded
	TraceReply      = "reply"      // vhostd replied, decoded (REPLY_ACK 0 included)
	TraceNack       = "nack"       // vhostd replied with a failure (REPLY_ACK non-zero)
	TraceRefused    = "refused"    // the request was refused; the connection stays
	TraceError      = "error"      // the request broke the connection
	TraceRing       = "ring"       // a ring's state changed (Fields: ring, from, to, why)
	// TraceViolation: the data path's count of a violation (Fields: ring,
	// kind, count, what, spec) grew, as the control path noticed at the
	// connection's next request.
	TraceViolation = "violation"
)

// Field is one decoded field of a trace event.
type Field struct {
	Name  string
	Value string
}

// Fields are the decoded fields of an event, in the order of the wire
// format. They marshal to a JSON object that keeps that order.
type Fields []Field

// MarshalJSON writes the fields as one object, in order.
func (fs Fields) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.Name)
		v, _ := json.Marshal(f.Value)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

// UnmarshalJSON reads what MarshalJSON wrote, keeping the order.
func (fs *Fields) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("fields: want an object")
	}
	*fs = nil
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		var v string
		if err := dec.Decode(&v); err != nil {
			return err
		}
		*fs = append(*fs, Field{Name: t.(string), Value: v})
	}
	return nil
}

// String writes the fields as name=value pairs.
func (fs Fields) String() string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.Name)
		b.WriteByte('=')
		b.WriteString(f.Value)
	}
	return b.String()
}

// TraceEvent is one thing that happened on a port's vhost-user
// connection, as `vhostctl trace` shows it.
type TraceEvent struct {
	Time time.Time `json:"time"`
	// Port is the port's name; the daemon fills it in.
	Port string `json:"port,omitempty"`
	Kind string `json:"kind"`
	// Seq numbers the port's events as they happened, from 1, over every
	// subscriber: a gap in what one subscriber got means events lost to
	// it.
	Seq uint64 `json:"seq"`
	// Request and Code name the request the event is about (not for
	// connect, disconnect and ring events).
	Request string `json:"request,omitempty"`
	Code    uint32 `json:"code,omitempty"`
	// Flags are the header's flags by name: NEED_REPLY, REPLY.
	Flags []string `json:"flags,omitempty"`
	// Size is the payload's length in bytes.
	Size   int    `json:"size,omitempty"`
	Fields Fields `json:"fields,omitempty"`
	// FDs are the kinds of the fds that came with a request (eventfd,
	// memfd, file, pipe, socket, ...), or went with a reply.
	FDs   []string `json:"fds,omitempty"`
	Error string   `json:"error,omitempty"`
	Peer  string   `json:"peer,omitempty"` // connect: who connected
	// Lost is how many events this subscriber had lost, in all, when
	// this one was queued for it: its reader was too slow.
	Lost uint64 `json:"lost,omitempty"`
}

// String is the event as a line: time, port, kind, request, flags, peer,
// decoded fields, fds, error (as vhostctl trace prints it).
func (e TraceEvent) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %-10s", e.Time.Format("15:04:05.000000"), e.Port, e.Kind)
	if e.Request != "" {
		b.WriteString(" " + e.Request)
	}
	if len(e.Flags) > 0 {
		b.WriteString(" [" + strings.Join(e.Flags, ",") + "]")
	}
	if e.Peer != "" {
		b.WriteString(" peer=" + e.Peer)
	}
	if len(e.Fields) > 0 {
		b.WriteString(" " + e.Fields.String())
	}
	if len(e.FDs) > 0 {
		b.WriteString(" fds=" + strings.Join(e.FDs, ","))
	}
	if e.Error != "" {
		b.WriteString(": " + e.Error)
	}
	return b.String()
}

// traceBuffer is how many events a subscriber may have queued: beyond
// it, events to it are dropped and counted, never waited for.
const traceBuffer = 1024

// TraceSub is one subscriber to a port's trace.
type TraceSub struct {
	// C delivers the events. It is closed by Close.
	C    chan TraceEvent
	t    *tracer
	lost atomic.Uint64
	once sync.Once
}

// Lost is how many events were dropped because C was full.
func (s *TraceSub) Lost() uint64 { return s.lost.Load() }

// Close ends the subscription and closes C.
func (s *TraceSub) Close() {
	s.once.Do(func() {
		s.t.mu.Lock()
		defer s.t.mu.Unlock()
		for i, x := range s.t.subs {
			if x == s {
				s.t.subs = append(s.t.subs[:i], s.t.subs[i+1:]...)
				break
			}
		}
		s.t.n.Store(int32(len(s.t.subs)))
		close(s.C)
	})
}

// tracer fans a port's events out to its subscribers. With none, on() is
// false and nothing is decoded: tracing costs one atomic load per
// control message, and nothing on the data path.
type tracer struct {
	n    atomic.Int32
	mu   sync.Mutex
	subs []*TraceSub
	seq  uint64 // guarded by mu
}

func (t *tracer) on() bool { return t.n.Load() > 0 }

func (t *tracer) subscribe() *TraceSub {
	s := &TraceSub{C: make(chan TraceEvent, traceBuffer), t: t}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs = append(t.subs, s)
	t.n.Store(int32(len(t.subs)))
	return s
}

// emit sends e to every subscriber that has room, and counts it lost for
// the others. It never blocks.
func (t *tracer) emit(e TraceEvent) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	e.Seq = t.seq
	for _, s := range t.subs {
		e.Lost = s.lost.Load()
		select {
		case s.C <- e:
		default:
			s.lost.Add(1)
		}
	}
}

// Trace subscribes to the server's trace: every request and reply on its
// connections, decoded, and the rings' state changes. The subscriber must
// read C or lose events (counted); it never slows the connection. Close
// the subscription when done.
func (s *Server) Trace() *TraceSub { return s.trace.subscribe() }

// traceFDKind says what an fd is, for the trace: "eventfd", "memfd",
// "pipe", "regular file", ...
func traceFDKind(fd int) string {
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "closed"
	}
	if link == "anon_inode:[eventfd]" {
		return "eventfd"
	}
	k := fdKind(fd, link)
	return strings.TrimPrefix(strings.TrimPrefix(k, "an "), "a ")
}

func fdKinds(fds []int) []string {
	if len(fds) == 0 {
		return nil
	}
	out := make([]string, len(fds))
	for i, fd := range fds {
		out[i] = traceFDKind(fd)
	}
	return out
}

func headerFlags(f uint32) []string {
	var out []string
	if f&flagReply != 0 {
		out = append(out, "REPLY")
	}
	if f&flagNeedReply != 0 {
		out = append(out, "NEED_REPLY")
	}
	if v := f & flagVersionMask; v != flagVersion {
		out = append(out, fmt.Sprintf("VERSION_%d", v))
	}
	return out
}

// traceAck records a REPLY_ACK sent for m: 0 success, else a NACK.
func (s *Server) traceAck(m *Message, v uint64) {
	if !s.trace.on() {
		return
	}
	kind := TraceReply
	if v != 0 {
		kind = TraceNack
	}
	s.trace.emit(TraceEvent{Kind: kind, Request: m.Request.String(), Code: uint32(m.Request),
		Flags: []string{"REPLY"}, Size: 8, Fields: Fields{{"ack", dec(v)}}})
}

// traceError records err, which ends the connection; m is the request
// it is about, or nil.
func (s *Server) traceError(m *Message, err error) {
	if !s.trace.on() {
		return
	}
	e := TraceEvent{Kind: TraceError, Error: err.Error()}
	if m != nil {
		e.Request, e.Code = m.Request.String(), uint32(m.Request)
	}
	s.trace.emit(e)
}

// ringState names a ring's state as vhostctl ports shows it.
func ringState(r RingStatus) string {
	switch {
	case r.Broken != "":
		return "broken"
	case r.Running:
		return "running"
	case r.Started:
		return "started"
	case !r.Enabled:
		return "disabled"
	}
	return "stopped"
}

// ringChanges lists the rings whose state differs between two statuses.
func ringChanges(old, cur []RingStatus) []TraceEvent {
	was := map[int]RingStatus{}
	for _, r := range old {
		was[r.Index] = r
	}
	var out []TraceEvent
	for _, r := range cur {
		from := "unset"
		if o, ok := was[r.Index]; ok {
			from = ringState(o)
			delete(was, r.Index)
		}
		if to := ringState(r); to != from {
			e := TraceEvent{Kind: TraceRing, Fields: Fields{{"ring", strconv.Itoa(r.Index)}, {"from", from}, {"to", to}}}
			if r.Broken != "" {
				e.Fields = append(e.Fields, Field{"why", r.Broken})
			}
			out = append(out, e)
		}
	}
	for _, o := range old {
		if _, gone := was[o.Index]; gone {
			out = append(out, TraceEvent{Kind: TraceRing, Fields: Fields{{"ring", strconv.Itoa(o.Index)}, {"from", ringState(o)}, {"to", "unset"}}})
		}
	}
	return out
}
