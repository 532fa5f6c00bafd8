// Package vhost serves the vhost-user protocol (QEMU
// docs/interop/vhost-user.rst) as the backend: it listens on a unix socket,
// negotiates features with the frontend, maps guest memory from the fds the
// frontend sends, sets up the rings, and hands running rings to a Backend.
package vhost

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// RingStatus describes one configured ring.
type RingStatus struct {
	Index   int    `json:"index"`
	Size    int    `json:"size"`
	Enabled bool   `json:"enabled"`
	Started bool   `json:"started"`
	Running bool   `json:"running"`
	Polling bool   `json:"polling,omitempty"` // no kick fd: the frontend expects polling
	Broken  string `json:"broken,omitempty"`
}

// Status is a point-in-time view of a socket and its frontend.
type Status struct {
	Path             string       `json:"path"`
	Connected        bool         `json:"connected"`
	Since            time.Time    `json:"since"`
	Negotiated       bool         `json:"negotiated"`
	Features         []string     `json:"features"`
	ProtocolFeatures []string     `json:"protocol_features"`
	Offered          []string     `json:"offered"`
	MemRegions       int          `json:"mem_regions"`
	Rings            []RingStatus `json:"rings"`
	LastError        string       `json:"last_error,omitempty"`
}

// Server serves one vhost-user socket: one frontend connection at a time.
type Server struct {
	path    string
	opts    Options
	backend Backend
	log     *logrus.Entry
	ln      *net.UnixListener

	mu     sync.Mutex // guards the fields below
	active *net.UnixConn
	conn   *connGuard // the active connection as Drop sees it (fault.go)
	status Status
	closed bool
	wg     sync.WaitGroup
}

// Listen creates the socket at path. A socket file left behind by a process
// that is gone is replaced; one that still answers is an error.
func Listen(path string, opts Options, b Backend, log *logrus.Entry) (*Server, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	s := &Server{path: path, opts: opts, backend: b, log: log, ln: ln}
	s.status = Status{Path: path, Since: time.Now(), Offered: FeatureNames(OfferedFeatures &^ opts.DisabledFeatures)}
	return s, nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("socket %s: a file that is not a socket is in the way; remove it or choose another path", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another process is serving it; stop it or choose another path", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// Serve accepts frontends until Close. It returns nil after Close.
func (s *Server) Serve() error {
	for {
		uc, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", s.path, err)
		}
		s.mu.Lock()
		if s.closed || s.active != nil {
			s.mu.Unlock()
			s.log.Warn("refusing a second frontend connection: one is already active")
			uc.Close()
			continue
		}
		s.active = uc
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(uc)
	}
}

// Close stops accepting, drops the active frontend (releasing its memory
// and fds), waits for it to be torn down, and removes the socket file.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.active != nil {
		s.active.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// Status returns the current state of the socket and its frontend.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Rings = append([]RingStatus(nil), st.Rings...)
	return st
}

func (s *Server) serveConn(uc *net.UnixConn) {
	defer s.wg.Done()
	log := s.log
	log.Info("frontend connected")
	g := s.track(uc)
	d := newDevice(log, g, s.opts)
	s.setStatus(d, true, "")
	c := newConn(uc)
	err := s.untrack(g, s.loop(c, d))
	d.resetGuarded(log)
	msg := ""
	if err != nil {
		msg = err.Error()
		log.WithError(err).Error("closing frontend connection")
	} else {
		log.Info("frontend disconnected")
	}
	// Record why, and accept a new frontend, before this one can see the
	// close: a frontend that reconnects at once (QEMU with reconnect, a
	// restarted testpmd) must not find the port still taken.
	s.setStatus(d, false, msg)
	s.mu.Lock()
	s.active = nil
	s.mu.Unlock()
	uc.Close()
}

func (s *Server) loop(c *conn, d *device) error {
	for {
		m, err := c.readMessage()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return err
		}
		if err := m.Validate(); err != nil {
			closeFDs(m.FDs)
			return err
		}
		s.log.WithField("request", m.Request.String()).Debug("vhost-user request")
		reply, err := d.handleGuarded(m)
		ack := m.NeedReply() && d.hasProtocol(ProtocolReplyAck) && !requests[m.Request].replies
		if err != nil {
			if ack {
				_ = c.replyU64(m.Request, 1)
			}
			return fmt.Errorf("%v: %w", m.Request, err)
		}
		// Status first: a frontend that reads the reply and then asks
		// vhostctl must see the request's effect.
		s.setStatus(d, true, "")
		switch {
		case requests[m.Request].replies:
			err = c.reply(m.Request, reply)
		case ack:
			err = c.replyU64(m.Request, 0)
		}
		if err != nil {
			return err
		}
	}
}

func (s *Server) setStatus(d *device, connected bool, lastErr string) {
	st := Status{
		Path:       s.path,
		Connected:  connected,
		Negotiated: d.featuresSet,
		Offered:    FeatureNames(d.offered),
	}
	if d.featuresSet {
		st.Features = FeatureNames(d.features)
		st.ProtocolFeatures = ProtocolFeatureNames(d.protocol)
	}
	if d.mem != nil {
		st.MemRegions = len(d.mem.Regions())
	}
	for i := range d.rings {
		r := &d.rings[i]
		if r.num == 0 && !r.started {
			continue
		}
		rs := RingStatus{Index: i, Size: int(r.num), Enabled: r.enabled, Started: r.started,
			Running: r.q != nil, Polling: r.started && r.kick < 0}
		if r.brokenBy != nil {
			rs.Broken = r.brokenBy.Error()
		}
		st.Rings = append(st.Rings, rs)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Since = s.status.Since
	if connected != s.status.Connected {
		st.Since = time.Now()
	}
	st.LastError = lastErr
	if lastErr == "" && !connected {
		st.LastError = s.status.LastError
	}
	s.status = st
}
