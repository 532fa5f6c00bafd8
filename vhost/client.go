package vhost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"
)

// Client mode.
//
// In client mode the frontend serves the socket (QEMU -chardev
// socket,...,server=on, libvirt's mode='server', DPDK's virtio_user with
// server=1) and vhostd connects to it. This is what lets vhostd restart
// without the guests noticing more than a short link outage: QEMU keeps
// the socket and the guest, vhostd connects again as soon as it runs, and
// QEMU sets the device up on the new connection as after any reconnect.
// (With vhostd as the server, QEMU must be the one to reconnect, and it
// retries only once a second, with reconnect=N.)
//
// Each connection is served by the same code as an accepted one
// (serveConn): deadlines, fd checks, the fault guard, Drop and the
// Disconnecter hook all apply. Only how a connection is had differs.

// Mode says which side of a vhost-user socket vhostd is.
const (
	// ModeServer: vhostd creates the socket and the frontend connects.
	ModeServer = "server"
	// ModeClient: the frontend serves the socket and vhostd connects.
	ModeClient = "client"
)

// Reconnect backoff of client mode: the first attempt after a session
// ends is immediate, then ReconnectMin, doubling up to ReconnectMax
// between attempts, until one connects. A session that lasted at least
// ReconnectMax resets the backoff; after a shorter one (a frontend that
// closes at once, or a protocol error) the next attempt waits ReconnectMin,
// doubled for each such session in a row, so a frontend that keeps failing
// is not hammered.
const (
	ReconnectMin = 100 * time.Millisecond
	ReconnectMax = time.Second
)

// dialTimeout bounds one connect(2); a unix socket connect does not block
// unless the listener's backlog is full.
const dialTimeout = time.Second

// Dial returns a Server in client mode for the vhost-user socket that a
// frontend serves at path. Serve connects to it, serves the connection,
// and connects again whenever the connection ends or the frontend is not
// there yet, with the backoff above, until Close. The socket need not
// exist yet. Options.Perm must be zero: vhostd creates no socket file in
// client mode, so it has no owner, group or mode to set.
func Dial(path string, opts Options, b Backend, log *logrus.Entry) (*Server, error) {
	if opts.Perm != (SocketPerm{}) {
		return nil, fmt.Errorf("socket %s: owner, group and mode are for a socket vhostd creates; in client mode the frontend creates it", path)
	}
	if path == "" {
		return nil, errors.New("client socket: empty path")
	}
	if len(path) > maxSunPath {
		return nil, fmt.Errorf("socket %s: path is %d bytes, longer than a unix socket address takes (%d)", path, len(path), maxSunPath)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{path: path, opts: opts, backend: b, log: log, done: make(chan struct{}),
		client: true, dialCtx: ctx, dialCancel: cancel, retryMin: ReconnectMin, retryMax: ReconnectMax}
	s.status = Status{Path: path, Mode: ModeClient, Since: time.Now(), Offered: FeatureNames(OfferedFeatures &^ opts.DisabledFeatures), MTU: max(opts.MTU, 0)}
	return s, nil
}

// serveClient is Serve in client mode.
func (s *Server) serveClient() error {
	s.log.WithFields(logrus.Fields{"socket": s.path, "mode": ModeClient}).Info("connecting to the frontend's socket")
	var delay time.Duration // before the next attempt
	failures := 0           // attempts that failed since the last connection
	short := 0              // sessions in a row shorter than retryMax
	for {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-s.done:
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		uc, err := s.dial()
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			if uc != nil {
				uc.Close()
			}
			return nil
		}
		s.status.Attempts++
		s.status.LastAttempt = time.Now()
		if err != nil {
			s.status.LastError = err.Error()
			s.mu.Unlock()
			failures++
			delay = min(max(2*delay, s.retryMin), s.retryMax)
			l := s.log.WithError(err).WithFields(logrus.Fields{"socket": s.path, "attempts": failures, "retry_in": delay})
			if failures == 1 {
				l.Warn("cannot connect to the frontend's socket; retrying")
			} else {
				l.Debug("cannot connect to the frontend's socket; retrying")
			}
			continue
		}
		s.status.Attempts = 0
		s.mu.Unlock()
		peer := peerOf(uc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			uc.Close()
			return nil
		}
		s.admit(uc, peer)
		s.wg.Add(1) // Close waits for the teardown
		s.mu.Unlock()
		if failures > 0 {
			s.log.WithFields(logrus.Fields{"socket": s.path, "attempts": failures + 1}).Info("connected to the frontend's socket after retrying")
		}
		failures = 0
		began := time.Now()
		s.serveConn(uc)
		s.wg.Done()
		if time.Since(began) >= s.retryMax {
			short, delay = 0, 0 // a good session: try again at once
		} else {
			// One that ended at once: back off, more after each such.
			short++
			delay = min(s.retryMin<<min(short-1, 10), s.retryMax)
		}
	}
}

// dial makes one connection attempt.
func (s *Server) dial() (*net.UnixConn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(s.dialCtx, "unix", s.path)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			err = oe.Err // "dial unix PATH: " says what the log's socket field says
		}
		return nil, fmt.Errorf("connect to %s: %w", s.path, err)
	}
	return c.(*net.UnixConn), nil
}
