package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until buf holds want.
func waitFor(t *testing.T, buf *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in:\n%s", want, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// vhostctl trace against a running vhostd: a frontend's handshake shows
// up decoded, as text or JSON lines, and the trace ends cleanly on
// Ctrl-C (the context) and when vhostd stops.
func TestTraceCommand(t *testing.T) {
	d, cfg := startDaemon(t)
	sock := filepath.Join(filepath.Dir(cfg.Control), "a.sock")
	for _, asJSON := range []bool{false, true} {
		var out, info syncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- traceTo(ctx, cfg.Control, "a", asJSON, &out, &info) }()
		waitFor(t, &info, "tracing a (Ctrl-C stops)")
		f, err := vt.Dial(sock, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Negotiate(1<<32|1<<30, 1<<3); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if asJSON {
			waitFor(t, &out, `"kind":"disconnect"`)
			var kinds []string
			for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var e vhost.TraceEvent
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatalf("not a JSON event: %q: %v", l, err)
				}
				if e.Port != "a" {
					t.Errorf("event for port %q", e.Port)
				}
				if e.Request == "SET_FEATURES" && (len(e.Fields) != 1 || e.Fields[0].Name != "features" || !strings.Contains(e.Fields[0].Value, "version_1")) {
					t.Errorf("SET_FEATURES fields %+v", e.Fields)
				}
				kinds = append(kinds, e.Kind+" "+e.Request)
			}
			want := []string{"connect ", "request GET_FEATURES", "reply GET_FEATURES", "request GET_PROTOCOL_FEATURES",
				"reply GET_PROTOCOL_FEATURES", "request SET_PROTOCOL_FEATURES", "request SET_OWNER", "request SET_FEATURES", "disconnect "}
			if strings.Join(kinds, "|") != strings.Join(want, "|") {
				t.Errorf("events %q, want %q", kinds, want)
			}
		} else {
			waitFor(t, &out, " a disconnect")
			for _, want := range []string{
				" a connect    peer=",
				" a reply      GET_FEATURES [REPLY] features=0x",
				" a request    SET_FEATURES features=0x140000000 (protocol_features,version_1)",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("no %q in:\n%s", want, out.String())
				}
			}
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("trace after Ctrl-C: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("trace did not end on Ctrl-C")
		}
	}

	// Unknown port: an error that names the ports.
	err := traceTo(context.Background(), cfg.Control, "nope", false, &syncBuffer{}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), `no VM port "nope" (ports: a)`) {
		t.Errorf("trace of an unknown port: %v", err)
	}

	// vhostd stopping ends the trace.
	done := make(chan error, 1)
	var info syncBuffer
	go func() { done <- traceTo(context.Background(), cfg.Control, "", false, &syncBuffer{}, &info) }()
	waitFor(t, &info, "tracing a")
	d.Stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("trace did not end when vhostd stopped")
	}
}
