package vhost_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// disconnects counts Disconnected calls.
type disconnects struct {
	recorder
	n atomic.Int32
}

func (d *disconnects) Disconnected() { d.n.Add(1) }

// accept waits up to timeout for the backend to connect to ln and returns
// the connection as a fake frontend.
func accept(t *testing.T, ln *net.UnixListener, timeout time.Duration) *vt.Frontend {
	t.Helper()
	ln.SetDeadline(time.Now().Add(timeout))
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("backend did not connect within %v: %v", timeout, err)
	}
	f := &vt.Frontend{C: c, MemFD: -1}
	t.Cleanup(f.Close)
	return f
}

func waitStatus(t *testing.T, s *vhost.Server, what string, ok func(vhost.Status) bool) vhost.Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never %s: %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClientMode: vhostd connects to a socket the frontend serves, keeps
// trying while it is missing (reporting attempts and the error), serves
// the connection like an accepted one, connects again at once when the
// frontend goes away, and leaves the frontend's socket alone on Close.
func TestClientMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fe.sock")
	b := &disconnects{}
	s, err := vhost.Dial(path, vhost.Options{}, b, quiet())
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()

	st := waitStatus(t, s, "retrying", func(st vhost.Status) bool { return st.Attempts >= 3 })
	if st.Mode != vhost.ModeClient || st.Connected || !strings.Contains(st.LastError, "no such file") || st.LastAttempt.IsZero() {
		t.Errorf("while the socket is missing: %+v", st)
	}
	// Backoff: 3 attempts take at least 0 + 100 + 200 ms.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f := accept(t, ln, 2*vhost.ReconnectMax)
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, s, "connected", func(st vhost.Status) bool { return st.Connected && st.Negotiated })
	if st.Attempts != 0 || st.LastError != "" || st.Mode != vhost.ModeClient {
		t.Errorf("connected: %+v", st)
	}

	// The frontend drops the connection (a restart): the device is torn
	// down and vhostd is back within the backoff's first steps.
	f.Close()
	t0 := time.Now()
	f2 := accept(t, ln, 2*vhost.ReconnectMax)
	if d := time.Since(t0); d > 3*vhost.ReconnectMin {
		t.Errorf("reconnected after %v, want within %v", d, 3*vhost.ReconnectMin)
	}
	if n := b.n.Load(); n != 1 {
		t.Errorf("Disconnected called %d times before the next connection, want 1", n)
	}
	if _, err := f2.Negotiate(fVersion1, 0); err != nil {
		t.Fatalf("second connection: %v", err)
	}

	// Drop ends the connection as in server mode; vhostd connects again.
	s.Drop(os.ErrDeadlineExceeded)
	if closed, _ := f2.WaitClosed(2 * time.Second); !closed {
		t.Fatal("Drop did not close the connection")
	}
	f3 := accept(t, ln, 2*vhost.ReconnectMax)
	waitStatus(t, s, "connected again", func(st vhost.Status) bool { return st.Connected })

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if closed, _ := f3.WaitClosed(2 * time.Second); !closed {
		t.Error("Close left the connection open")
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed the frontend's socket: %v", err)
	}
	if n := b.n.Load(); n != 3 {
		t.Errorf("Disconnected called %d times for 3 connections", n)
	}
}

// TestClientModeRefusesPerm: a client creates no socket file, so owner,
// group and mode cannot apply.
func TestClientModeRefusesPerm(t *testing.T) {
	_, err := vhost.Dial(filepath.Join(t.TempDir(), "fe.sock"), vhost.Options{Perm: vhost.SocketPerm{Mode: 0o660}}, &recorder{}, quiet())
	if err == nil || !strings.Contains(err.Error(), "client mode") {
		t.Fatalf("Dial with a socket mode: %v", err)
	}
}
