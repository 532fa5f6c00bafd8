package vhost_test

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// waitLastError waits until the server has dropped its frontend and
// returns the error it recorded.
func waitLastError(t *testing.T, s *vhost.Server, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := s.Status()
		if !st.Connected && st.LastError != "" {
			return st.LastError
		}
		if time.Now().After(deadline) {
			t.Fatalf("frontend not dropped within %v (status %+v)", within, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStalledMessageDropped: a frontend that sends part of a message and
// stalls is dropped once the message timeout expires, whether it stalls
// in the header or in the payload.
func TestStalledMessageDropped(t *testing.T) {
	hdr := make([]byte, 12)
	binary.LittleEndian.PutUint32(hdr, vt.SetFeatures)
	binary.LittleEndian.PutUint32(hdr[4:], vt.FlagVersion)
	binary.LittleEndian.PutUint32(hdr[8:], 8)
	cases := []struct {
		name string
		send []byte
		want string
	}{
		{"header", hdr[:5], "frontend sent 5 of 12 header bytes and stalled for 100ms"},
		{"payload", append(append([]byte(nil), hdr...), 1, 2, 3), "SET_FEATURES: frontend sent 3 of 8 payload bytes and stalled for 100ms"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, path := serve(t, vhost.Options{MessageTimeout: 100 * time.Millisecond}, &recorder{})
			f := dial(t, path)
			if _, err := f.C.Write(c.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got := waitLastError(t, s, 3*time.Second)
			if !strings.Contains(got, c.want) {
				t.Fatalf("last error %q, want %q", got, c.want)
			}
			if el := time.Since(start); el < 80*time.Millisecond {
				t.Fatalf("dropped after %v, before the timeout", el)
			}
			if !f.Closed() {
				t.Fatal("connection still open")
			}
			// The port is free again.
			g := dial(t, path)
			if _, err := g.GetU64(vt.GetFeatures); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestIdleFrontendKept: the message timeout runs only inside a message.
// A frontend that sends a message in two slow parts (within the timeout)
// and then idles for several timeouts keeps its connection.
func TestIdleFrontendKept(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s, path := serve(t, vhost.Options{MessageTimeout: timeout, ReplyTimeout: timeout}, &recorder{})
	f := dial(t, path)
	time.Sleep(2 * timeout) // idle before the first message
	req := make([]byte, 12)
	binary.LittleEndian.PutUint32(req, vt.GetFeatures)
	binary.LittleEndian.PutUint32(req[4:], vt.FlagVersion)
	f.C.Write(req[:7])
	time.Sleep(timeout / 6)
	f.C.Write(req[7:])
	if _, err := f.Reply(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * timeout) // idle after a message and a reply
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatalf("idle frontend dropped: %v (last error %q)", err, s.Status().LastError)
	}
	if !s.Status().Connected {
		t.Fatal("idle frontend dropped")
	}
}

// TestUnreadRepliesDropped: a frontend that sends requests but never reads
// the replies fills the socket buffer; the backend must drop it once a
// reply cannot be written within the reply timeout, not block forever.
func TestUnreadRepliesDropped(t *testing.T) {
	s, path := serve(t, vhost.Options{ReplyTimeout: 100 * time.Millisecond}, &recorder{})
	f := dial(t, path)
	req := make([]byte, 12)
	binary.LittleEndian.PutUint32(req, vt.GetFeatures)
	binary.LittleEndian.PutUint32(req[4:], vt.FlagVersion)
	batch := make([]byte, 0, 12*1024)
	for len(batch) < cap(batch) {
		batch = append(batch, req...)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.C.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := f.C.Write(batch); err != nil {
				return // the backend closed the connection
			}
		}
	}()
	got := waitLastError(t, s, 5*time.Second)
	if !strings.Contains(got, "GET_FEATURES: frontend has not read its replies for 100ms") {
		t.Fatalf("last error %q", got)
	}
	<-done
}
