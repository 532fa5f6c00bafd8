package vhost_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// serveLogged is serve with the server's log lines captured.
func serveLogged(t *testing.T, opts vhost.Options, b vhost.Backend) (*vhost.Server, string, *logtest.Hook) {
	t.Helper()
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	path := filepath.Join(t.TempDir(), "vm.sock")
	s, err := vhost.Listen(path, opts, b, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return s, path, hook
}

// findLog returns the first captured entry whose message contains msg.
func findLog(hook *logtest.Hook, msg string) *logrus.Entry {
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, msg) {
			return e
		}
	}
	return nil
}

// event is one call into a backend, in order.
type event struct {
	publish bool // Publish, else Disconnected
	rings   bool // Publish with rings (not nil)
	at      time.Time
}

// tracker is a Backend and Disconnecter that records its calls;
// Disconnected takes slow to return, like a backend with state to clear.
type tracker struct {
	mu     sync.Mutex
	events []event
	slow   time.Duration
}

func (b *tracker) Publish(r *vhost.Rings) {
	b.mu.Lock()
	b.events = append(b.events, event{publish: true, rings: r != nil, at: time.Now()})
	b.mu.Unlock()
}

func (b *tracker) Disconnected() {
	time.Sleep(b.slow)
	b.mu.Lock()
	b.events = append(b.events, event{at: time.Now()})
	b.mu.Unlock()
}

func (b *tracker) log() []event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]event(nil), b.events...)
}

// TestNewcomerWaitsForTeardown: a frontend that connects while the
// previous one is still being torn down waits and is then served, after
// the backend's Disconnected hook has run (and after Publish(nil)).
func TestNewcomerWaitsForTeardown(t *testing.T) {
	b := &tracker{slow: 200 * time.Millisecond}
	_, path, _ := serveLogged(t, vhost.Options{}, b)
	a := connectGuest(t, path, fVersion1|fProtocol)
	// The newcomer connects while a is active, and asks at once.
	n := dial(t, path)
	if err := n.Send(vt.GetFeatures, vt.FlagVersion, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	a.f.Close()
	if _, err := n.Reply(vt.GetFeatures); err != nil {
		t.Fatalf("newcomer not served after the old connection's teardown: %v", err)
	}
	served := time.Now()
	ev := b.log()
	var disc []int
	for i, e := range ev {
		if !e.publish {
			disc = append(disc, i)
		}
	}
	if len(disc) != 1 {
		t.Fatalf("Disconnected called %d times, want once: %+v", len(disc), ev)
	}
	i := disc[0]
	if i == 0 || !ev[i-1].publish || ev[i-1].rings {
		t.Fatalf("Disconnected not preceded by Publish(nil): %+v", ev)
	}
	if !ev[0].rings {
		t.Fatalf("the guest's rings were never published: %+v", ev)
	}
	if !ev[i].at.Before(served) {
		t.Fatal("newcomer served before the old connection's Disconnected returned")
	}
}

// TestActiveHolderKept: a newcomer that finds an active frontend waits
// out the handover wait and is refused; the active frontend keeps its
// connection, and the log says who holds the port and since when.
func TestActiveHolderKept(t *testing.T) {
	s, path, hook := serveLogged(t, vhost.Options{HandoverWait: 200 * time.Millisecond}, &recorder{})
	a := dial(t, path)
	if _, err := a.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n := dial(t, path)
	if !n.Closed() {
		t.Fatal("newcomer not refused")
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("newcomer refused after %v, before the handover wait", el)
	}
	if _, err := a.GetU64(vt.GetFeatures); err != nil || !s.Status().Connected {
		t.Fatalf("active frontend disturbed by the newcomer: %v", err)
	}
	e := findLog(hook, "another frontend holds the port")
	if e == nil {
		t.Fatal("no log line for the refused newcomer")
	}
	holder, _ := e.Data["holder"].(string)
	if !strings.Contains(holder, fmt.Sprintf("pid %d ", os.Getpid())) {
		t.Fatalf("log names holder %q, want this process (pid %d)", holder, os.Getpid())
	}
	if since, _ := e.Data["holder_since"].(string); since == "" {
		t.Fatalf("log line lacks since when the port is held: %v", e.Data)
	}
}

// TestWaitingBounded: at most four newcomers wait; a fifth is refused at
// once. When the holder leaves, one waiter is served.
func TestWaitingBounded(t *testing.T) {
	_, path, hook := serveLogged(t, vhost.Options{HandoverWait: 5 * time.Second}, &recorder{})
	a := dial(t, path)
	if _, err := a.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	var waiters []*vt.Frontend
	for i := 0; i < 4; i++ {
		w := dial(t, path)
		if err := w.Send(vt.GetFeatures, vt.FlagVersion, nil); err != nil {
			t.Fatal(err)
		}
		waiters = append(waiters, w)
	}
	start := time.Now()
	fifth := dial(t, path)
	if !fifth.Closed() {
		t.Fatal("fifth newcomer not refused")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("fifth newcomer refused after %v, want at once", el)
	}
	if findLog(hook, "refusing frontend connection at once") == nil {
		t.Fatal("no log line for the newcomer refused at once")
	}
	a.Close()
	// The first waiter to get the port is served; the others keep waiting.
	got := make(chan int, len(waiters))
	for i, w := range waiters {
		go func() {
			if _, err := w.Reply(vt.GetFeatures); err == nil {
				got <- i
			}
		}()
	}
	select {
	case <-got:
	case <-time.After(3 * time.Second):
		t.Fatal("no waiter served after the holder left")
	}
}

// TestDisconnectedOncePerConnection: the Disconnecter hook runs once for
// every connection, whether the frontend hung up or was dropped for a
// protocol error, and only after the rings were taken from the data path.
func TestDisconnectedOncePerConnection(t *testing.T) {
	b := &tracker{}
	s, path, _ := serveLogged(t, vhost.Options{}, b)
	count := func() (n int) {
		for _, e := range b.log() {
			if !e.publish {
				n++
			}
		}
		return n
	}
	bad := dial(t, path)
	bad.Send(vt.GetFeatures, 0x2, nil) // protocol version 2: dropped
	if !bad.Closed() {
		t.Fatal("bad frontend kept")
	}
	waitDisconnected(t, s)
	if n := count(); n != 1 {
		t.Fatalf("Disconnected called %d times after a dropped connection, want 1", n)
	}
	g := connectGuest(t, path, fVersion1|fProtocol)
	g.f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for count() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("Disconnected called %d times after two connections, want 2", count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	ev := b.log()
	if last := ev[len(ev)-2]; !last.publish || last.rings {
		t.Fatalf("the last Publish before Disconnected was not Publish(nil): %+v", ev)
	}
}
