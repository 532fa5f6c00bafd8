package hostile

import (
	"errors"
	"net"
	"regexp"
	"testing"
	"time"

	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// stallLog is what vhostd's log must say when it drops a frontend that
// stopped in the middle of a message: a timeout of some wording.
var stallLog = regexp.MustCompile(`(?i)time|deadline|stall|partial|incomplete`)

// TestPartialMessage is case 4a and 4b: a frontend sends part of a
// message and stalls. Within about 5 s vhostd must drop it (the frontend
// reads EOF) and log why; a second frontend that connects during the
// stall must be served once the first is dropped (its GET_FEATURES is
// answered within about 6 s of connecting).
func TestPartialMessage(t *testing.T) {
	for _, tc := range []struct {
		name, id string
		bytes    []byte
	}{
		{"5 of 12 header bytes", "4a", vt.Header(vt.GetFeatures, vt.FlagVersion, 0)[:5]},
		{"3 of 8 payload bytes", "4b", append(vt.Header(vt.SetFeatures, vt.FlagVersion, 8), 1, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := startVhostd(t, names("a", "b"))
			defer v.finish(t, tc.id, "a", "b")
			f := v.dial(t, "a")
			off := len(v.Log())
			if _, err := f.WriteRaw(tc.bytes); err != nil {
				t.Fatal(err)
			}
			start := time.Now()

			// The second frontend connects during the stall.
			time.Sleep(500 * time.Millisecond)
			g := v.dial(t, "a")
			gConnected := time.Now()
			type result struct {
				err error
				at  time.Duration
			}
			second := make(chan result, 1)
			go func() {
				err := g.Send(vt.GetFeatures, vt.FlagVersion, nil)
				if err == nil {
					_, err = g.AckValue(vt.GetFeatures, 6500*time.Millisecond) // reads any u64 reply
				}
				second <- result{err, time.Since(gConnected)}
			}()

			closed, took := f.WaitClosed(6500 * time.Millisecond)
			took = time.Since(start)
			if !closed {
				t.Errorf("frontend stalled after %s still connected after %v, want it dropped within ~5s", tc.name, took.Round(time.Millisecond))
			} else {
				t.Logf("stalled frontend dropped after %v", took.Round(time.Millisecond))
				if log, ok := v.waitLog(off, time.Second, stallLog.MatchString); !ok {
					t.Errorf("log says nothing about the stalled frontend being dropped for a timeout (want %v):\n%s", stallLog, tail(log, 2000))
				}
			}
			r := <-second
			if r.err != nil {
				t.Errorf("second frontend, connected during the stall: GET_FEATURES not answered (after %v): %v", r.at.Round(time.Millisecond), r.err)
			} else {
				t.Logf("second frontend served %v after connecting", r.at.Round(time.Millisecond))
			}
		})
	}
}

// TestRequestFlood is case 4c: a frontend sends thousands of GET_FEATURES
// requests and never reads a reply. Once the socket buffers fill, vhostd
// must drop it within a few seconds (the frontend's writes fail), and the
// port must be free again.
func TestRequestFlood(t *testing.T) {
	v := startVhostd(t, names("a", "b"))
	defer v.finish(t, "4c", "a", "b")
	f := v.dial(t, "a")
	var batch []byte
	for i := 0; i < 1000; i++ {
		batch = append(batch, vt.Header(vt.GetFeatures, vt.FlagVersion, 0)...)
	}
	start := time.Now()
	var full time.Time // when a write first stalled: the buffers are full
	sent := 0
	var werr error
	for time.Since(start) < 20*time.Second {
		f.C.SetWriteDeadline(time.Now().Add(250 * time.Millisecond))
		n, err := f.C.Write(batch)
		sent += n
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if full.IsZero() {
				full = time.Now()
			}
			if time.Since(full) > 8*time.Second {
				break
			}
			continue
		}
		if err != nil {
			werr = err
			break
		}
	}
	f.C.SetWriteDeadline(time.Time{})
	switch {
	case full.IsZero():
		t.Errorf("%d bytes of requests written without the socket filling up (write error %v)", sent, werr)
	case werr == nil:
		t.Errorf("flooding frontend (never reading) still connected %v after the socket buffers filled (%d bytes of requests sent), want it dropped within a few seconds",
			time.Since(full).Round(time.Millisecond), sent)
	default:
		t.Logf("flooding frontend dropped %v after the buffers filled (%d bytes of requests sent): %v", time.Since(full).Round(time.Millisecond), sent, werr)
	}
	if werr != nil {
		// The port is free again while the flooder has not even closed.
		g := v.dial(t, "a")
		err := g.Send(vt.GetFeatures, vt.FlagVersion, nil)
		if err == nil {
			_, err = g.AckValue(vt.GetFeatures, 3*time.Second)
		}
		if err != nil {
			t.Errorf("port a not free again after the flooder was dropped: %v", err)
		}
	}
}
