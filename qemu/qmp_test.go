//go:build linux

package qemu

import (
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhostd/vhostd/qemu/qmptest"
)

// dialFake connects a client to s and closes it at the end of the test.
func dialFake(t *testing.T, s *qmptest.Server) *QMP {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, s.Path())
	if err != nil {
		t.Fatalf("DialQMP: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// settleGoroutines waits up to 2 s for the goroutine count to fall to at
// most want and returns it.
func settleGoroutines(want int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestQMPGreeting(t *testing.T) {
	s := qmptest.NewServer(t)
	q := dialFake(t, s)
	if v := q.Version(); v.String() != "7.2.22" || !strings.HasPrefix(v.Package, "Debian") {
		t.Errorf("Version() = %+v", v)
	}
	if got := s.Commands(); len(got) != 1 || got[0] != "qmp_capabilities" {
		t.Errorf("handshake sent %v, want [qmp_capabilities]", got)
	}
}

func TestQMPNotAServer(t *testing.T) {
	s := qmptest.NewServer(t)
	s.SetGreeting(`{"hello": "world"}`)
	_, err := DialQMP(withTimeout(t, 5*time.Second), s.Path())
	if err == nil || !strings.Contains(err.Error(), "not a QMP server") || !errors.Is(err, ErrQMPClosed) {
		t.Fatalf("DialQMP to a non-QMP server: %v", err)
	}
}

// TestQMPNoGreeting: a monitor that accepts but never greets (as QEMU does
// for a second client) makes DialQMP fail when its context ends.
func TestQMPNoGreeting(t *testing.T) {
	s := qmptest.NewServer(t)
	s.SetGreeting("")
	start := time.Now()
	_, err := DialQMP(withTimeout(t, 200*time.Millisecond), s.Path())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no greeting") {
		t.Fatalf("DialQMP without greeting: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("DialQMP took %v to give up", d)
	}
}

func TestQMPDialNoSocket(t *testing.T) {
	_, err := DialQMP(withTimeout(t, time.Second), "/nonexistent/qmp.sock")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("DialQMP to a missing socket: %v", err)
	}
}

func TestQMPExecuteResult(t *testing.T) {
	s := qmptest.NewServer(t)
	s.Handle("query-status", func(c *qmptest.Conn, r *qmptest.Request) {
		c.Reply(r, map[string]any{"status": "running", "running": true})
	})
	var args map[string]any
	s.Handle("echo", func(c *qmptest.Conn, r *qmptest.Request) {
		r.Args(&args)
		c.Reply(r, struct{}{})
	})
	q := dialFake(t, s)
	ctx := withTimeout(t, 5*time.Second)
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := q.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != "running" || !st.Running {
		t.Fatalf("query-status = %+v, %v", st, err)
	}
	if err := q.Execute(ctx, "echo", map[string]any{"id": "x", "n": 3}, nil); err != nil {
		t.Fatal(err)
	}
	if args["id"] != "x" || args["n"] != 3.0 {
		t.Errorf("server got arguments %v", args)
	}
	for _, r := range s.Requests() {
		if r.Execute == "query-status" && r.Arguments != nil {
			t.Errorf("nil args sent as %s, want no arguments member", r.Arguments)
		}
	}
}

func TestQMPError(t *testing.T) {
	s := qmptest.NewServer(t)
	s.Handle("device_del", func(c *qmptest.Conn, r *qmptest.Request) {
		c.Fail(r, "DeviceNotFound", "Device 'nic9' not found")
	})
	q := dialFake(t, s)
	ctx := withTimeout(t, 5*time.Second)
	err := q.Execute(ctx, "device_del", map[string]string{"id": "nic9"}, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != QMPDeviceNotFound || qe.Desc != "Device 'nic9' not found" || qe.Command != "device_del" {
		t.Fatalf("device_del error = %#v", err)
	}
	if !IsQMPErrorClass(err, QMPDeviceNotFound) || IsQMPErrorClass(err, QMPGenericError) {
		t.Error("IsQMPErrorClass is wrong")
	}
	err = q.Execute(ctx, "frobnicate", nil, nil)
	if !IsQMPErrorClass(err, QMPCommandNotFound) || !strings.Contains(err.Error(), "frobnicate") {
		t.Fatalf("unknown command: %v", err)
	}
	// The connection survives errors.
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		t.Fatal(err)
	}
}

// TestQMPOutOfOrder: replies are matched by id, whatever their order, with
// events in between.
func TestQMPOutOfOrder(t *testing.T) {
	s := qmptest.NewServer(t)
	slowReq := make(chan *qmptest.Request, 1)
	s.Handle("slow", func(c *qmptest.Conn, r *qmptest.Request) { slowReq <- r })
	s.Handle("fast", func(c *qmptest.Conn, r *qmptest.Request) {
		c.Event("BEFORE", nil)
		c.Reply(r, "fast-result")
		c.Event("BETWEEN", map[string]int{"n": 1})
		c.Reply(<-slowReq, "slow-result")
	})
	q := dialFake(t, s)
	ctx := withTimeout(t, 5*time.Second)
	sub := q.Subscribe()
	defer sub.Close()

	var slow string
	slowErr := make(chan error, 1)
	go func() { slowErr <- q.Execute(ctx, "slow", nil, &slow) }()
	for len(s.Commands()) < 2 { // wait until "slow" is in
		time.Sleep(time.Millisecond)
	}
	var fast string
	if err := q.Execute(ctx, "fast", nil, &fast); err != nil || fast != "fast-result" {
		t.Fatalf("fast = %q, %v", fast, err)
	}
	if err := <-slowErr; err != nil || slow != "slow-result" {
		t.Fatalf("slow = %q, %v", slow, err)
	}
	for _, want := range []string{"BEFORE", "BETWEEN"} {
		if ev, err := sub.Next(ctx); err != nil || ev.Name != want {
			t.Fatalf("event = %+v, %v; want %s", ev, err, want)
		}
	}
}

func TestQMPEvents(t *testing.T) {
	s := qmptest.NewServer(t)
	q := dialFake(t, s)
	ctx := withTimeout(t, 5*time.Second)
	s.Event("EARLY", nil) // before any subscription: nobody gets it
	// A round trip makes sure EARLY has been read.
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		t.Fatal(err)
	}
	devs := q.Subscribe("DEVICE_DELETED")
	all := q.Subscribe()
	s.Event("DEVICE_DELETED", map[string]string{"device": "nic1"})
	s.Event("RESET", map[string]bool{"guest": true})
	s.Event("DEVICE_DELETED", map[string]string{"device": "nic2"})

	ev, err := devs.Wait(ctx, func(ev Event) bool { return strings.Contains(string(ev.Data), "nic2") })
	if err != nil || ev.Name != "DEVICE_DELETED" {
		t.Fatalf("Wait = %+v, %v", ev, err)
	}
	if want := time.Unix(1700000000, 250000000); !ev.Time.Equal(want) {
		t.Errorf("event time %v, want %v", ev.Time, want)
	}
	var names []string
	for range 3 {
		ev, err := all.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, ev.Name)
	}
	if got := strings.Join(names, " "); got != "DEVICE_DELETED RESET DEVICE_DELETED" {
		t.Errorf("all events: %s", got)
	}
	// Nothing more is queued.
	if ev, err := all.Next(withTimeout(t, 50*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("extra event %+v, %v", ev, err)
	}
	devs.Close()
	if _, err := devs.Next(ctx); !errors.Is(err, ErrSubscriptionClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	// Events still queued when the connection ends are delivered first.
	s.Event("LAST", nil)
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		t.Fatal(err)
	}
	q.Close()
	if ev, err := all.Next(ctx); err != nil || ev.Name != "LAST" {
		t.Errorf("queued event after close: %+v, %v", ev, err)
	}
	if _, err := all.Next(ctx); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("Next after the connection closed: %v", err)
	}
}

// TestQMPSlowSubscriber: a subscriber that does not read loses the oldest
// events but never holds up replies.
func TestQMPSlowSubscriber(t *testing.T) {
	s := qmptest.NewServer(t)
	s.Handle("flood", func(c *qmptest.Conn, r *qmptest.Request) {
		for range maxQueuedEvents + 10 {
			c.Event("SPAM", nil)
		}
		c.Reply(r, struct{}{})
	})
	q := dialFake(t, s)
	sub := q.Subscribe("SPAM")
	defer sub.Close()
	if err := q.Execute(withTimeout(t, 5*time.Second), "flood", nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := sub.Dropped(); n != 10 {
		t.Errorf("Dropped() = %d, want 10", n)
	}
}

// TestQMPHang: a command QEMU does not answer fails with the context's
// error; its late reply does not confuse later commands, and cancelled
// calls leave no goroutine behind.
func TestQMPHang(t *testing.T) {
	s := qmptest.NewServer(t)
	var mu sync.Mutex
	var stuck []*qmptest.Request
	s.Handle("stuck", func(c *qmptest.Conn, r *qmptest.Request) {
		mu.Lock()
		stuck = append(stuck, r)
		mu.Unlock()
	})
	s.Handle("answer", func(c *qmptest.Conn, r *qmptest.Request) {
		mu.Lock()
		for _, old := range stuck {
			c.Reply(old, "late")
		}
		stuck = nil
		mu.Unlock()
		c.Reply(r, "answer")
	})
	q := dialFake(t, s)
	before := runtime.NumGoroutine()
	start := time.Now()
	err := q.Execute(withTimeout(t, 100*time.Millisecond), "stuck", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered command: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("gave up after %v", d)
	}
	for range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := q.Execute(ctx, "stuck", nil, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v", err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
		q.Execute(ctx, "stuck", nil, nil)
		cancel()
	}
	var got string
	if err := q.Execute(withTimeout(t, 5*time.Second), "answer", nil, &got); err != nil || got != "answer" {
		t.Fatalf("answer = %q, %v", got, err)
	}
	if n := settleGoroutines(before); n > before {
		t.Errorf("goroutines: %d before, %d after 400 abandoned calls", before, n)
	}
	q.mu.Lock()
	pending := len(q.pending)
	q.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d calls still registered", pending)
	}
}

// TestQMPCloseMidReply: QEMU hanging up halfway through a reply fails the
// call and every later one; nothing hangs.
func TestQMPCloseMidReply(t *testing.T) {
	s := qmptest.NewServer(t)
	s.Handle("query-status", func(c *qmptest.Conn, r *qmptest.Request) {
		c.WriteRaw(`{"return": {"status": "runn`)
		c.Close()
	})
	q := dialFake(t, s)
	ctx := withTimeout(t, 5*time.Second)
	sub := q.Subscribe()
	defer sub.Close()
	err := q.Execute(ctx, "query-status", nil, nil)
	if !errors.Is(err, ErrQMPClosed) || !strings.Contains(err.Error(), io.ErrUnexpectedEOF.Error()) {
		t.Fatalf("reply cut short: %v", err)
	}
	select {
	case <-q.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed")
	}
	if err := q.Execute(ctx, "query-status", nil, nil); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("call after the end: %v", err)
	}
	if _, err := sub.Next(ctx); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("subscription after the end: %v", err)
	}
}

// TestQMPHangUpWhilePending: calls waiting for a reply fail when QEMU goes
// away or the client closes.
func TestQMPHangUpWhilePending(t *testing.T) {
	for _, who := range []string{"server", "client"} {
		t.Run(who, func(t *testing.T) {
			s := qmptest.NewServer(t)
			got := make(chan *qmptest.Conn, 1)
			s.Handle("stuck", func(c *qmptest.Conn, r *qmptest.Request) { got <- c })
			q := dialFake(t, s)
			ctx := withTimeout(t, 5*time.Second)
			errc := make(chan error, 1)
			go func() { errc <- q.Execute(ctx, "stuck", nil, nil) }()
			c := <-got
			if who == "server" {
				c.Close()
			} else {
				q.Close()
			}
			if err := <-errc; !errors.Is(err, ErrQMPClosed) {
				t.Fatalf("pending call: %v", err)
			}
		})
	}
}

// TestQMPWriteStalled: a monitor that stops reading cannot block a call
// past its context, and a command cut short ends the connection (the rest
// of it would be garbage).
func TestQMPWriteStalled(t *testing.T) {
	s := qmptest.NewServer(t)
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) }) // runs before the server's cleanup
	s.Handle("block", func(c *qmptest.Conn, r *qmptest.Request) { <-unblock })
	q := dialFake(t, s)
	go q.Execute(context.Background(), "block", nil, nil) // the server stops reading
	for len(s.Commands()) < 2 {
		time.Sleep(time.Millisecond)
	}
	big := strings.Repeat("x", 4<<20) // far more than a socket buffer
	start := time.Now()
	bigErr := make(chan error, 1)
	go func() {
		bigErr <- q.Execute(withTimeout(t, time.Second), "big", map[string]string{"data": big}, nil)
	}()
	// Wait until the big write is under way (it holds the write
	// semaphore: a fixed sleep was not enough on a loaded machine, where
	// the big command's deadline could pass before it wrote a byte),
	// then queue behind it: that wait is bounded by the caller's context
	// too.
	for len(q.writeSem) == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if err := q.Execute(withTimeout(t, 100*time.Millisecond), "small", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("command queued behind a stalled write: %v", err)
	}
	if err := <-bigErr; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled write: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("gave up after %v", d)
	}
	if err := q.Execute(withTimeout(t, time.Second), "qmp_capabilities", nil, nil); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("after a cut-short command: %v", err)
	}
}

// TestQMPGetFD passes a pipe's write end to the fake QEMU, which receives a
// real descriptor: what it writes comes out of the read end.
func TestQMPGetFD(t *testing.T) {
	s := qmptest.NewServer(t)
	q := dialFake(t, s)
	ctx := withTimeout(t, 5*time.Second)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := q.GetFD(ctx, "tap0", w); err != nil {
		t.Fatal(err)
	}
	// Passing did not change the caller's file (File.Fd would have made it
	// blocking, and deadlines would no longer work).
	if err := w.SetWriteDeadline(time.Time{}); err != nil {
		t.Errorf("write end lost its non-blocking mode: %v", err)
	}
	w.Close() // the server holds its own copy
	got := s.FD("tap0")
	if got == nil {
		t.Fatal("server received no fd named tap0")
	}
	if _, err := got.Write([]byte("through the passed fd")); err != nil {
		t.Fatal(err)
	}
	got.Close()
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "through the passed fd" {
		t.Fatalf("read %q, %v", b, err)
	}
	// Without an fd QEMU says so.
	err = q.Execute(ctx, "getfd", map[string]string{"fdname": "none"}, nil)
	if !IsQMPErrorClass(err, QMPGenericError) || !strings.Contains(err.Error(), "SCM_RIGHTS") {
		t.Errorf("getfd without fd: %v", err)
	}
}
