//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"
)

// ErrSubscriptionClosed is returned by a Subscription's methods after its
// Close.
var ErrSubscriptionClosed = errors.New("qmp subscription closed")

// maxQueuedEvents bounds the events a subscription keeps for a slow reader;
// beyond it the oldest are dropped (and counted) so that the reader of the
// connection never waits for a subscriber.
const maxQueuedEvents = 1024

// Event is an asynchronous QMP event.
type Event struct {
	// Name is the event's name, e.g. "DEVICE_DELETED".
	Name string
	// Data is the event's data member as QEMU sent it (nil if none).
	Data json.RawMessage
	// Time is when QEMU emitted the event (zero if it sent no timestamp).
	Time time.Time
}

// Subscription receives the events of a QMP connection that it selects, in
// the order QEMU sent them, from the moment of Subscribe on.
type Subscription struct {
	q     *QMP
	names map[string]bool // nil: every event
	wake  chan struct{}   // capacity 1: an event was queued or Close called

	mu      sync.Mutex // guards the fields below
	queue   []Event
	dropped int
	closed  bool
}

// Subscribe returns a subscription to the named events, or to all events
// when no name is given. Subscribe before issuing the command whose event
// you await, so that the event cannot slip past. Close it when done.
func (q *QMP) Subscribe(names ...string) *Subscription {
	s := &Subscription{q: q, wake: make(chan struct{}, 1)}
	if len(names) > 0 {
		s.names = make(map[string]bool, len(names))
		for _, n := range names {
			s.names[n] = true
		}
	}
	q.mu.Lock()
	q.subs[s] = struct{}{}
	q.mu.Unlock()
	return s
}

// dispatch queues ev on every subscription that selects it.
func (q *QMP) dispatch(ev Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for s := range q.subs {
		if s.names == nil || s.names[ev.Name] {
			s.push(ev)
		}
	}
}

func (s *Subscription) push(ev Event) {
	s.mu.Lock()
	if len(s.queue) >= maxQueuedEvents {
		s.queue = s.queue[1:]
		s.dropped++
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next returns the next event. Events queued before the connection ended
// are still returned; after them Next returns the connection's error
// (wrapping ErrQMPClosed).
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return Event{}, ErrSubscriptionClosed
		}
		if len(s.queue) > 0 {
			ev := s.queue[0]
			s.queue[0] = Event{}
			s.queue = s.queue[1:]
			if len(s.queue) == 0 {
				s.queue = nil
			}
			s.mu.Unlock()
			return ev, nil
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-s.q.done:
			// Events are queued before done is closed: one more look.
			s.mu.Lock()
			n := len(s.queue)
			s.mu.Unlock()
			if n == 0 {
				return Event{}, s.q.Err()
			}
		}
	}
}

// Wait returns the next event for which match returns true (any event if
// match is nil), discarding the others.
func (s *Subscription) Wait(ctx context.Context, match func(Event) bool) (Event, error) {
	for {
		ev, err := s.Next(ctx)
		if err != nil || match == nil || match(ev) {
			return ev, err
		}
	}
}

// Dropped returns how many events were discarded because the subscription's
// queue was full.
func (s *Subscription) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Close ends the subscription: no more events are queued, and Next returns
// ErrSubscriptionClosed.
func (s *Subscription) Close() {
	s.q.mu.Lock()
	delete(s.q.subs, s)
	s.q.mu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.queue = nil
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
