// Package vhost serves the vhost-user protocol (QEMU
// docs/interop/vhost-user.rst) as the backend: it listens on a unix socket,
// negotiates features with the frontend, maps guest memory from the fds the
// frontend sends, sets up the rings, and hands running rings to a Backend.
package vhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
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
	// The ring's setup, as the frontend gave it: its parts' addresses
	// (frontend virtual addresses), whether used-ring writes are logged
	// at LogAddr, the kick (eventfd, polling or none yet) and whether
	// a call eventfd was given.
	Desc    uint64 `json:"desc,omitempty"`
	Avail   uint64 `json:"avail,omitempty"`
	Used    uint64 `json:"used,omitempty"`
	Log     bool   `json:"log,omitempty"`
	LogAddr uint64 `json:"log_addr,omitempty"`
	Kick    string `json:"kick,omitempty"`
	Call    bool   `json:"call,omitempty"`
}

// Status is a point-in-time view of a socket and its frontend.
type Status struct {
	Path string `json:"path"`
	// Mode is ModeServer (vhostd created the socket) or ModeClient
	// (vhostd connects to the frontend's socket).
	Mode             string       `json:"mode"`
	Connected        bool         `json:"connected"`
	Since            time.Time    `json:"since"`
	Negotiated       bool         `json:"negotiated"`
	Features         []string     `json:"features"`
	ProtocolFeatures []string     `json:"protocol_features"`
	Offered          []string     `json:"offered"`
	MemRegions       int          `json:"mem_regions"`
	Rings            []RingStatus `json:"rings"`
	LastError        string       `json:"last_error,omitempty"`
	// Attempts is, in client mode, how many times vhostd tried to connect
	// since the last connection was made (0 while connected), and
	// LastAttempt when it last tried.
	Attempts    int       `json:"attempts,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// DeviceStatus is the virtio device status the frontend last set
	// (SET_STATUS), and MTU the one in force on the port (0: none): the
	// port's, or the one the frontend set (NET_SET_MTU).
	DeviceStatus uint64 `json:"device_status,omitempty"`
	MTU          int    `json:"mtu,omitempty"`
	// For the negotiation report (vhostctl ports --detail): the features
	// masked on the port, the protocol features offered, the virtio-net
	// header length in use (0 before the rings run), and the frontend's
	// violations of the specifications on its connection (the last
	// connection's, once it is gone), with how many there were in all.
	Masked          []string    `json:"masked,omitempty"`
	OfferedProtocol []string    `json:"offered_protocol,omitempty"`
	HdrLen          int         `json:"hdr_len,omitempty"`
	Violations      []Violation `json:"violations,omitempty"`
	ViolationsSeen  int         `json:"violations_seen,omitempty"`
	// Connections is how many frontend connections the port has had,
	// and Negotiations how many SET_FEATURES it accepted over them (a
	// guest reboot or driver reload negotiates again on one connection).
	Connections  int `json:"connections"`
	Negotiations int `json:"negotiations"`
	// InternalErrors is how many connections ended because a request met
	// a bug of vhostd's (an *InternalError; the log has its stack).
	InternalErrors int `json:"internal_errors"`
}

// DefaultHandoverWait is how long a new frontend connection waits for the
// previous one's teardown when Options leave it zero. QEMU with
// reconnect, or a restarted testpmd, connects again within milliseconds
// of dropping the old connection, while vhostd may still be releasing it.
const DefaultHandoverWait = 3 * time.Second

// maxWaiting bounds the connections waiting for the port at once: each
// holds an fd and a goroutine, and a local process could otherwise pile
// them up.
const maxWaiting = 4

// Disconnecter is implemented by a Backend that keeps state per frontend
// connection (a MAC address locked on first sight, counters of one
// session).
type Disconnecter interface {
	// Disconnected is called once after each frontend connection is torn
	// down: Publish(nil) has returned, the guest memory is unmapped and the
	// ring fds are closed. It is called before the next frontend on the
	// same socket is served, so state cleared here cannot leak into the
	// next session.
	Disconnected()
}

// Stopper is implemented by a Backend that keeps state for as long as
// the frontend runs the device (a MAC address locked on first sight).
type Stopper interface {
	// Stopped is called when the frontend has stopped the device while
	// keeping the connection: GET_VRING_BASE has stopped the last ring
	// that was started, as QEMU does when the VM stops (the end of a
	// migration, whose source keeps its connection until it quits; a
	// reboot), or RESET_DEVICE. Publish(nil) has returned. The rings may
	// be started again later on the same connection.
	Stopped()
}

// Server serves one vhost-user socket: one frontend connection at a time.
// Listen makes one that creates the socket and accepts frontends on it
// (server mode); Dial one that connects to a socket the frontend serves
// (client mode, client.go).
//
// A frontend that connects while another is being served waits, up to
// Options.HandoverWait, for that connection's teardown, and is served as
// soon as it completes: a frontend that reconnects at once (QEMU with
// reconnect, a restarted testpmd) must not find the port still taken.
// If the old connection is still active when the wait ends, the newcomer
// is refused and the log names the frontend holding the port and since
// when; the active frontend is never dropped for a newcomer, so a stray
// local process cannot disconnect a running guest. At most four
// newcomers wait at once; more are refused at once.
type Server struct {
	path    string
	opts    Options
	backend Backend
	log     *logrus.Entry
	ln      *net.UnixListener
	sock    *socketFile // removed by Close if still ours

	mu          sync.Mutex // guards the fields below
	active      *net.UnixConn
	activePeer  string        // who holds the port, for the log of a refused newcomer
	activeSince time.Time     // when active was admitted
	freed       chan struct{} // closed once active is torn down
	waiting     int           // newcomers waiting for the port
	done        chan struct{} // closed by Close: waiters give up
	status      Status
	// queues are the running queues by ring index as of the last
	// setStatus: Status asks them whether the data path broke them since.
	queues map[int]*Ring
	// ringViol and watches are the data-path violations of the
	// connection's stopped queues and the kick watches of its disabled
	// rings as of the last setStatus, for Status (dataviolation.go).
	ringViol []ringViolations
	watches  []*kickWatch
	// traced are the data-path violation counts last traced, by
	// ring/kind, on the current connection.
	traced map[string]uint64
	conn   *connGuard // the active connection as Drop sees it (fault.go)
	trace  tracer     // subscribers to the connections' events (trace.go)
	// connections and negotiations count frontends admitted and
	// SET_FEATURES accepted, for Status.
	connections, negotiations int
	internalErrors            int // connections ended by an *InternalError
	closed                    bool
	wg                        sync.WaitGroup

	// Client mode (Dial): no listener; Serve connects instead.
	client             bool
	dialCtx            context.Context // cancelled by Close
	dialCancel         context.CancelFunc
	retryMin, retryMax time.Duration
}

// Listen creates the socket at path. A socket file left behind by a process
// that is gone is replaced; one that still answers is an error.
func Listen(path string, opts Options, b Backend, log *logrus.Entry) (*Server, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, sock, err := listenUnix(path, opts.Perm)
	if err != nil {
		return nil, err
	}
	s := &Server{path: path, opts: opts, backend: b, log: log, ln: ln, sock: sock, done: make(chan struct{})}
	s.status = Status{Path: path, Mode: ModeServer, Since: time.Now(), Offered: FeatureNames(OfferedFeatures &^ opts.DisabledFeatures), MTU: max(opts.MTU, 0)}
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

// Serve accepts frontends until Close, or in client mode connects to the
// frontend and reconnects until Close. It returns nil after Close.
func (s *Server) Serve() error {
	if s.client {
		return s.serveClient()
	}
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
		// Named before taking the lock: it reads /proc.
		peer := peerOf(uc)
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			uc.Close()
		case s.active == nil:
			s.admit(uc, peer)
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				s.serveConn(uc)
			}()
		case s.waiting >= maxWaiting:
			holder, since := s.activePeer, s.activeSince
			s.mu.Unlock()
			s.log.WithFields(logrus.Fields{"peer": peer, "holder": holder, "holder_since": since.Format(time.RFC3339),
				"waiting": maxWaiting}).Warn("refusing frontend connection at once: the port is taken and enough connections already wait for it")
			uc.Close()
		default:
			// Wait off the accept loop: another newcomer, or the
			// frontend reconnecting, must be seen meanwhile.
			s.waiting++
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				s.waitTurn(uc, peer)
			}()
		}
	}
}

// admit makes uc, whose frontend is peer, the active connection. s.mu
// must be held.
func (s *Server) admit(uc *net.UnixConn, peer string) {
	s.active = uc
	s.activePeer = peer
	s.activeSince = time.Now()
	s.freed = make(chan struct{})
}

// waitTurn waits for the active connection's teardown and then serves uc,
// or refuses uc once the handover wait is over.
func (s *Server) waitTurn(uc *net.UnixConn, peer string) {
	wait := s.opts.HandoverWait
	if wait <= 0 {
		wait = DefaultHandoverWait
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.closed {
			s.waiting--
			s.mu.Unlock()
			uc.Close()
			return
		}
		if s.active == nil {
			s.waiting--
			s.admit(uc, peer)
			s.mu.Unlock()
			s.serveConn(uc)
			return
		}
		freed, holder, since := s.freed, s.activePeer, s.activeSince
		s.mu.Unlock()
		select {
		case <-freed: // several may wait: the first to take the lock wins
		case <-s.done:
		case <-timer.C:
			s.mu.Lock()
			s.waiting--
			s.mu.Unlock()
			s.log.WithFields(logrus.Fields{"peer": peer, "holder": holder, "holder_since": since.Format(time.RFC3339),
				"waited": wait}).Warn("refusing frontend connection: another frontend holds the port")
			uc.Close()
			return
		}
	}
}

// peerOf names the process at the other end of uc ("qemu-system-x86 pid
// 4242 uid 107") from SO_PEERCRED, for log lines about who holds a port.
func peerOf(uc *net.UnixConn) string {
	rc, err := uc.SyscallConn()
	if err != nil {
		return "unknown"
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return "unknown"
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cred.Pid))
	name := strings.TrimSpace(string(comm))
	if name == "" {
		name = "process"
	}
	return fmt.Sprintf("%s pid %d uid %d", name, cred.Pid, cred.Uid)
}

// Close stops accepting (or, in client mode, connecting), drops the active
// frontend (releasing its memory and fds) and any waiting ones, waits for
// them to be torn down, and removes the socket file it created (none in
// client mode: the socket is the frontend's).
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	if s.active != nil {
		s.active.Close()
	}
	s.mu.Unlock()
	var err error
	if s.client {
		s.dialCancel()
	} else {
		err = errors.Join(s.ln.Close(), s.sock.remove())
	}
	s.wg.Wait()
	return err
}

// Status returns the current state of the socket and its frontend.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Kicks on disabled rings count only while no request waits: one may
	// enable the ring (see device.checkKicks). Unlike there, this view can
	// race with the connection's goroutine: for the instant between its
	// read of an enabling request and the request's effect, kicks sent
	// right after that request may show here; they are never kept.
	live := readKicks(s.watches)
	if s.active == nil || inputPending(s.active) {
		live = nil
	}
	st := withDataViolations(s.status, dataViolations(s.ringViol, s.queues, live))
	st.Connections, st.Negotiations, st.InternalErrors = s.connections, s.negotiations, s.internalErrors
	st.Rings = append([]RingStatus(nil), st.Rings...)
	// A ring the data path broke shows so at once, not only once the
	// frontend next stops it.
	for i := range st.Rings {
		if q := s.queues[st.Rings[i].Index]; q != nil && st.Rings[i].Broken == "" {
			if err := q.Broken(); err != nil {
				st.Rings[i].Broken = err.Error()
			}
		}
	}
	return st
}

// serveConn serves the active connection uc until it ends, then tears it
// down and frees the port.
func (s *Server) serveConn(uc *net.UnixConn) {
	s.mu.Lock()
	log := s.log.WithField("peer", s.activePeer)
	s.mu.Unlock()
	log.Info("frontend connected")
	g := s.track(uc)
	d := newDevice(log, g, s.opts)
	s.mu.Lock()
	s.connections++
	s.traced = nil
	s.mu.Unlock()
	if s.trace.on() {
		s.mu.Lock()
		peer := s.activePeer
		s.mu.Unlock()
		s.trace.emit(TraceEvent{Kind: TraceConnect, Peer: peer})
	}
	s.setStatus(d, true, "")
	c := newConn(uc)
	if s.opts.MessageTimeout > 0 {
		c.msgTimeout = s.opts.MessageTimeout
	}
	if s.opts.ReplyTimeout > 0 {
		c.replyTimeout = s.opts.ReplyTimeout
	}
	d.pending = func() bool { return inputPending(uc) }
	err := s.untrack(g, s.loop(c, d))
	if err == nil {
		// The frontend hung up with every request handled.
		d.pending = nil
		d.checkKicks()
	}
	d.resetGuarded(log)
	if dc, ok := s.backend.(Disconnecter); ok {
		dc.Disconnected()
	}
	msg := ""
	if err != nil {
		if ie := (*InternalError)(nil); errors.As(err, &ie) {
			s.mu.Lock()
			s.internalErrors++
			s.mu.Unlock()
		}
		msg = err.Error()
		log.WithError(err).Error("closing frontend connection")
	} else {
		log.Info("frontend disconnected")
	}
	// Record why, and accept a new frontend, before this one can see the
	// close: a frontend that reconnects at once (QEMU with reconnect, a
	// restarted testpmd) must not find the port still taken.
	s.setStatus(d, false, msg)
	if s.trace.on() {
		s.trace.emit(TraceEvent{Kind: TraceDisconnect, Error: msg})
	}
	s.mu.Lock()
	s.active = nil
	close(s.freed)
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
			s.traceError(nil, err)
			return err
		}
		if s.trace.on() {
			s.trace.emit(TraceEvent{Kind: TraceRequest, Request: m.Request.String(), Code: uint32(m.Request),
				Flags: headerFlags(m.Flags), Size: len(m.Payload), Fields: decodeRequest(m, d.mem, d.packed()), FDs: fdKinds(m.FDs)})
		}
		if !m.Request.implemented() {
			// A request vhostd does not implement ends the connection, as
			// its effect (logging, inflight tracking, ...) cannot be
			// delivered. A frontend that asked for a reply gets a NACK
			// first, even without REPLY_ACK negotiated: it asked, the
			// connection ends right after, so the extra message cannot
			// desynchronise anything, and it learns why. vhost-user.rst,
			// REPLY_ACK: "the back-end MUST respond with a Payload
			// VhostUserMsg indicating success or failure. The payload
			// should be set to zero on success or non-zero on failure".
			closeFDs(m.FDs)
			if m.NeedReply() {
				_ = c.replyU64(m.Request, 1)
				s.traceAck(m, 1)
			}
			err := fmt.Errorf("%v (%d): not implemented by vhostd", m.Request, uint32(m.Request))
			s.traceError(m, err)
			return err
		}
		if err := m.Validate(); err != nil {
			d.violate(m.Request, "vhost-user.rst, Message specification", "malformed: %v", err)
			s.setStatus(d, true, "")
			closeFDs(m.FDs)
			s.traceError(m, err)
			return err
		}
		s.log.WithField("request", m.Request.String()).Debug("vhost-user request")
		seen := d.violationsSeen
		reply, err := d.handleGuarded(m)
		var ie *InternalError
		if err != nil && d.violationsSeen == seen && !errors.As(err, &ie) {
			// (A bug of vhostd's is not the frontend's violation.)
			d.violate(m.Request, specFor(m.Request), "%v", err)
		}
		replyFD := d.takeReplyFD()
		ack := m.NeedReply() && d.hasProtocol(ProtocolReplyAck) && !d.replies(m.Request)
		if err != nil {
			unixClose(replyFD)
			if ack {
				_ = c.replyU64(m.Request, 1)
				s.traceAck(m, 1)
			}
			var r *refusal
			if !errors.As(err, &r) {
				err = fmt.Errorf("%v: %w", m.Request, err)
				s.traceError(m, err)
				return err
			}
			// Refused, with nothing changed: the connection stays.
			s.log.WithError(err).WithField("request", m.Request.String()).Warn("refused a request; the connection stays")
			if s.trace.on() {
				s.trace.emit(TraceEvent{Kind: TraceRefused, Request: m.Request.String(), Code: uint32(m.Request), Error: err.Error()})
			}
			s.setStatus(d, true, "")
			continue
		}
		if m.Request == SetFeatures {
			s.mu.Lock()
			s.negotiations++
			s.mu.Unlock()
		}
		// Status first: a frontend that reads the reply and then asks
		// vhostctl must see the request's effect.
		s.setStatus(d, true, "")
		switch {
		case d.replies(m.Request):
			if s.trace.on() {
				var fds []string
				if replyFD >= 0 {
					fds = fdKinds([]int{replyFD})
				}
				s.trace.emit(TraceEvent{Kind: TraceReply, Request: m.Request.String(), Code: uint32(m.Request),
					Flags: []string{"REPLY"}, Size: len(reply), Fields: decodeReply(m.Request, reply, false, d.packed()), FDs: fds})
			}
			err = c.replyFD(m.Request, reply, replyFD)
		case ack:
			s.traceAck(m, 0)
			err = c.replyU64(m.Request, 0)
		}
		if err != nil {
			return err
		}
	}
}

func (s *Server) setStatus(d *device, connected bool, lastErr string) {
	d.syncKickWatches()
	d.checkKicks()
	watches := make([]*kickWatch, 0, len(d.watches))
	for _, w := range d.watches {
		if w != nil {
			watches = append(watches, w)
		}
	}
	ringViol := append([]ringViolations(nil), d.ringViol...)
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
	st.Masked = FeatureNames(OfferedFeatures &^ d.offered)
	st.OfferedProtocol = ProtocolFeatureNames(d.protocolOffered())
	if d.running != nil {
		st.HdrLen = d.running.HdrLen
	}
	st.Violations = append([]Violation(nil), d.violations...)
	st.ViolationsSeen = d.violationsSeen
	st.DeviceStatus, st.MTU = d.net.status, d.net.mtu
	queues := map[int]*Ring{}
	for i := range d.rings {
		r := &d.rings[i]
		if r.num == 0 && !r.started {
			continue
		}
		rs := RingStatus{Index: i, Size: int(r.num), Enabled: r.enabled, Started: r.started,
			Running: r.q != nil || r.pq != nil, Polling: r.started && r.kick < 0}
		if r.brokenBy != nil {
			rs.Broken = r.brokenBy.Error()
		}
		if r.addrSet {
			rs.Desc, rs.Avail, rs.Used = r.addr.Desc, r.addr.Avail, r.addr.Used
			rs.Log, rs.LogAddr = r.addr.Flags&1 != 0, r.addr.Log
		}
		switch {
		case r.kick >= 0:
			rs.Kick = "eventfd"
		case r.started:
			rs.Kick = "polling"
		}
		rs.Call = r.call >= 0
		if q := r.running(); q != nil {
			queues[i] = q
		}
		st.Rings = append(st.Rings, rs)
	}
	var changes []TraceEvent
	defer func() {
		for _, e := range changes {
			s.trace.emit(e)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trace.on() {
		changes = ringChanges(s.status.Rings, st.Rings)
		changes = append(changes, s.violationEvents(dataViolations(ringViol, queues, nil))...)
	}
	s.queues = queues
	s.ringViol, s.watches = ringViol, watches
	// No Status can read a retired watch now: close its fd.
	for _, w := range d.retired {
		unixClose(w.fd)
	}
	d.retired = nil
	st.Mode, st.Attempts, st.LastAttempt = s.status.Mode, s.status.Attempts, s.status.LastAttempt
	st.Connections, st.Negotiations, st.InternalErrors = s.connections, s.negotiations, s.internalErrors
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
