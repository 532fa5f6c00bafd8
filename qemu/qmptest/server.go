//go:build linux

// Package qmptest is a fake QEMU monitor for tests of QMP clients: a unix
// socket server that greets, answers commands through handlers the test
// installs, sends events, receives fds (SCM_RIGHTS) for getfd, and can
// misbehave on purpose (stay silent, reply out of order, hang up
// mid-reply). Machine adds a model of the QEMU objects that hot-plugging a
// vhost-user NIC touches.
package qmptest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// DefaultGreeting is the greeting of QEMU 7.2 as Debian 12 ships it.
const DefaultGreeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}`

// Request is one command a client sent.
type Request struct {
	// Execute is the command name.
	Execute string `json:"execute"`
	// Arguments is the arguments object as sent (nil if none).
	Arguments json.RawMessage `json:"arguments,omitempty"`
	// ID is the id member as sent (nil if none).
	ID json.RawMessage `json:"id,omitempty"`
	// FDs are the descriptors received (SCM_RIGHTS) since the previous
	// command, as QEMU attaches them to the command that follows.
	FDs []*os.File `json:"-"`
}

// Args decodes the request's arguments into v.
func (r *Request) Args(v any) error {
	if r.Arguments == nil {
		return json.Unmarshal([]byte("{}"), v)
	}
	return json.Unmarshal(r.Arguments, v)
}

// Handler answers one request on c, by c.Reply or c.Fail, now, later (from
// another goroutine) or never. Handlers of one connection run one at a time,
// in the order the requests arrived, as in QEMU's monitor.
type Handler func(c *Conn, r *Request)

// Server is a fake QMP server on a unix socket.
type Server struct {
	t    testing.TB
	path string
	ln   *net.UnixListener
	wg   sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	greeting string
	handlers map[string]Handler
	conns    map[*Conn]struct{}
	requests []Request
	fds      map[string]*os.File
	closed   bool
}

// NewServer starts a fake QMP server on a new socket in a fresh temporary
// directory; it is closed (and its connections dropped) at the end of the
// test. It answers qmp_capabilities and getfd; other commands fail with
// CommandNotFound until a handler is installed.
func NewServer(t testing.TB) *Server {
	t.Helper()
	// A short directory: sun_path holds 108 bytes, test names can be long.
	dir, err := os.MkdirTemp("", "qmptest")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "qmp.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	s := &Server{
		t: t, path: path, ln: ln,
		greeting: DefaultGreeting,
		handlers: make(map[string]Handler),
		conns:    make(map[*Conn]struct{}),
		fds:      make(map[string]*os.File),
	}
	s.handlers["qmp_capabilities"] = func(c *Conn, r *Request) { c.Reply(r, struct{}{}) }
	s.handlers["getfd"] = s.getfd
	s.handlers["closefd"] = s.closefd
	t.Cleanup(func() {
		s.Close()
		os.RemoveAll(dir)
	})
	s.wg.Add(1)
	go s.accept()
	return s
}

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// SetGreeting replaces the greeting sent to clients that connect from now
// on; "" sends none (a monitor that hangs before greeting).
func (s *Server) SetGreeting(raw string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.greeting = raw
}

// Handle installs h for command, replacing any handler before it.
func (s *Server) Handle(command string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[command] = h
}

// Requests returns the commands received so far, in order, on all
// connections.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Commands returns the names of the commands received so far, in order.
func (s *Server) Commands() []string {
	var out []string
	for _, r := range s.Requests() {
		out = append(out, r.Execute)
	}
	return out
}

// FD returns the file a client passed with getfd under name, or nil.
func (s *Server) FD(name string) *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fds[name]
}

// Event sends an event to every connected client.
func (s *Server) Event(name string, data any) {
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Event(name, data)
	}
}

// Close stops accepting, drops every connection, closes the fds received,
// and waits for the server's goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	for _, f := range s.fds {
		f.Close()
	}
	s.fds = nil
	// Fds no handler took (closing one twice is harmless with *os.File).
	for _, r := range s.requests {
		for _, f := range r.FDs {
			f.Close()
		}
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		uc, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		c := &Conn{s: s, uc: uc}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			uc.Close()
			return
		}
		s.conns[c] = struct{}{}
		greeting := s.greeting
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve(greeting)
		}()
	}
}

func (s *Server) getfd(c *Conn, r *Request) {
	var a struct {
		FDName string `json:"fdname"`
	}
	if err := r.Args(&a); err != nil || a.FDName == "" {
		c.Fail(r, "GenericError", "Parameter 'fdname' is missing")
		return
	}
	if len(r.FDs) == 0 {
		c.Fail(r, "GenericError", "No file descriptor supplied via SCM_RIGHTS")
		return
	}
	// QEMU keeps the last fd received.
	f := r.FDs[len(r.FDs)-1]
	for _, g := range r.FDs[:len(r.FDs)-1] {
		g.Close()
	}
	r.FDs = nil
	s.mu.Lock()
	if old := s.fds[a.FDName]; old != nil {
		old.Close()
	}
	if s.fds == nil { // closed meanwhile
		f.Close()
	} else {
		s.fds[a.FDName] = f
	}
	s.mu.Unlock()
	c.Reply(r, struct{}{})
}

func (s *Server) closefd(c *Conn, r *Request) {
	var a struct {
		FDName string `json:"fdname"`
	}
	r.Args(&a)
	s.mu.Lock()
	f := s.fds[a.FDName]
	delete(s.fds, a.FDName)
	s.mu.Unlock()
	if f == nil {
		c.Fail(r, "GenericError", fmt.Sprintf("File descriptor named '%s' not found", a.FDName))
		return
	}
	f.Close()
	c.Reply(r, struct{}{})
}

// Conn is one client connection to the fake server.
type Conn struct {
	s  *Server
	uc *net.UnixConn

	writeMu sync.Mutex // one message at a time
}

// Reply sends r's successful reply with return value ret.
func (c *Conn) Reply(r *Request, ret any) {
	c.send(map[string]any{"return": ret, "id": r.ID})
}

// Fail sends r's error reply.
func (c *Conn) Fail(r *Request, class, desc string) {
	c.send(map[string]any{"error": map[string]string{"class": class, "desc": desc}, "id": r.ID})
}

// Event sends an event with data (nil for none) and a fixed timestamp.
func (c *Conn) Event(name string, data any) {
	m := map[string]any{
		"event":     name,
		"timestamp": map[string]int64{"seconds": 1700000000, "microseconds": 250000},
	}
	if data != nil {
		m["data"] = data
	}
	c.send(m)
}

// WriteRaw writes b as it is: half a message, garbage, anything.
func (c *Conn) WriteRaw(b string) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.uc.Write([]byte(b))
}

// Close hangs up.
func (c *Conn) Close() { c.uc.Close() }

func (c *Conn) send(m map[string]any) {
	if raw, ok := m["id"].(json.RawMessage); ok && raw == nil {
		delete(m, "id") // QEMU echoes the id only if there was one
	}
	b, err := json.Marshal(m)
	if err != nil {
		c.s.t.Errorf("qmptest: encode reply: %v", err)
		return
	}
	c.WriteRaw(string(b) + "\r\n")
}

func (c *Conn) serve(greeting string) {
	defer func() {
		c.uc.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	}()
	if greeting != "" {
		c.WriteRaw(greeting + "\r\n")
	}
	rd := &fdReader{uc: c.uc}
	dec := json.NewDecoder(rd)
	for {
		var r Request
		if err := dec.Decode(&r); err != nil {
			rd.closeAll()
			return
		}
		r.FDs = rd.take()
		c.s.mu.Lock()
		c.s.requests = append(c.s.requests, r)
		h := c.s.handlers[r.Execute]
		c.s.mu.Unlock()
		if h == nil {
			c.Fail(&r, "CommandNotFound", fmt.Sprintf("The command %s has not been found", r.Execute))
		} else {
			h(c, &r)
		}
	}
}

// fdReader reads a unix stream, keeping the fds that come with the bytes.
type fdReader struct {
	uc  *net.UnixConn
	fds []*os.File
}

func (r *fdReader) Read(p []byte) (int, error) {
	oob := make([]byte, unix.CmsgSpace(16*4))
	n, oobn, _, _, err := r.uc.ReadMsgUnix(p, oob)
	n, oobn = max(n, 0), max(oobn, 0) // -1 on error
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr == nil {
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					r.fds = append(r.fds, os.NewFile(uintptr(fd), "qmp-fd"))
				}
			}
		}
	}
	if n == 0 && err == nil && oobn == 0 {
		// A zero-byte read without error is EOF on a stream socket.
		return 0, io.EOF
	}
	return n, err
}

func (r *fdReader) take() []*os.File {
	fds := r.fds
	r.fds = nil
	return fds
}

func (r *fdReader) closeAll() {
	for _, f := range r.fds {
		f.Close()
	}
	r.fds = nil
}
