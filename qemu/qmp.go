//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrQMPClosed is returned (wrapped) by calls on a QMP connection that has
// ended: closed by Close, or by QEMU, or broken by a bad message.
var ErrQMPClosed = errors.New("qmp connection closed")

// QMPVersion is the QEMU version announced in the QMP greeting.
type QMPVersion struct {
	Major, Minor, Micro int
	// Package is the distribution's package version, e.g. "Debian 1:7.2+dfsg-7".
	Package string
}

// String returns the version as "major.minor.micro".
func (v QMPVersion) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// QMP is a client connection to a QEMU monitor speaking QMP. Commands may be
// issued from several goroutines at once; replies are matched to them by id.
// [QMP.Monitor] presents it as go-qemu's qmp.Monitor; the transport is
// this package's own because go-qemu's SocketMonitor has no deadlines and
// can block replies behind unread events (see [Monitor]).
type QMP struct {
	conn    *net.UnixConn
	version QMPVersion
	greeted chan qmpMessage // the greeting, handed from the reader to DialQMP

	// Semaphores (capacity 1), so that waiting for them honours contexts.
	// writeSem serialises writes: each command goes out whole. fdSem is
	// held by a command carrying fds from its send until its reply: QEMU
	// keeps only the fds of its latest read, so two such commands in flight
	// could swap them.
	writeSem chan struct{}
	fdSem    chan struct{}

	mu      sync.Mutex // guards the fields below
	nextID  uint64
	pending map[string]chan qmpMessage
	subs    map[*Subscription]struct{}
	err     error // why the connection ended; set before done is closed

	done chan struct{} // closed when the reader has stopped
}

// qmpMessage is any message QEMU sends: greeting, reply or event.
type qmpMessage struct {
	QMP       json.RawMessage `json:"QMP"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID json.RawMessage `json:"id"`
}

type qmpRequest struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id"`
}

// DialQMP connects to the QMP socket at path, reads QEMU's greeting and
// leaves capabilities negotiation mode (qmp_capabilities). ctx bounds the
// whole handshake; QEMU serves one QMP client per socket at a time, so a
// second client sees no greeting until the first disconnects.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect to %s: %w", path, err)
	}
	q := &QMP{
		conn:     c.(*net.UnixConn),
		greeted:  make(chan qmpMessage, 1),
		writeSem: make(chan struct{}, 1),
		fdSem:    make(chan struct{}, 1),
		pending:  make(map[string]chan qmpMessage),
		subs:     make(map[*Subscription]struct{}),
		done:     make(chan struct{}),
	}
	go q.readLoop()
	select {
	case m := <-q.greeted:
		q.version = parseGreeting(m.QMP)
	case <-q.done:
		return nil, fmt.Errorf("qmp %s: no greeting: %w", path, q.Err())
	case <-ctx.Done():
		q.Close()
		return nil, fmt.Errorf("qmp %s: no greeting (is another client connected to this socket?): %w", path, ctx.Err())
	}
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	return q, nil
}

func parseGreeting(raw json.RawMessage) QMPVersion {
	var g struct {
		Version struct {
			QEMU    struct{ Major, Minor, Micro int } `json:"qemu"`
			Package string                            `json:"package"`
		} `json:"version"`
	}
	json.Unmarshal(raw, &g) // a greeting without a version is still a greeting
	v := g.Version
	return QMPVersion{Major: v.QEMU.Major, Minor: v.QEMU.Minor, Micro: v.QEMU.Micro, Package: v.Package}
}

// Version returns the QEMU version from the greeting.
func (q *QMP) Version() QMPVersion { return q.version }

// Done returns a channel that is closed once the connection has ended.
func (q *QMP) Done() <-chan struct{} { return q.done }

// Err returns why the connection ended (wrapping ErrQMPClosed), or nil
// while it is open.
func (q *QMP) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// Close closes the connection and waits for its reader to stop. Pending and
// later calls fail with an error wrapping ErrQMPClosed.
func (q *QMP) Close() error {
	q.fail(ErrQMPClosed)
	<-q.done
	return nil
}

// fail records why the connection ends (the first reason wins) and closes
// the socket, which stops the reader.
func (q *QMP) fail(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
	q.conn.Close()
}

// Execute runs command with args (any value encoding/json turns into a JSON
// object; nil for none) and decodes QEMU's return value into result (nil
// to ignore it). An error QEMU returns is a *QMPError. When ctx ends first,
// Execute returns ctx's error at once; the command may still run in QEMU,
// and its late reply is dropped.
func (q *QMP) Execute(ctx context.Context, command string, args, result any) error {
	return q.execute(ctx, command, args, result, nil)
}

// ExecuteWithFiles is Execute with files passed to QEMU as SCM_RIGHTS
// ancillary data on the same message, as getfd and add-fd expect. The
// caller keeps ownership of files.
func (q *QMP) ExecuteWithFiles(ctx context.Context, command string, args, result any, files ...*os.File) error {
	if len(files) == 0 {
		return q.Execute(ctx, command, args, result)
	}
	fds, err := dupFiles(files)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	defer closeFDs(fds)
	if err := q.acquire(ctx, q.fdSem); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	defer func() { <-q.fdSem }()
	return q.execute(ctx, command, args, result, fds)
}

// GetFD passes f to QEMU under name (QMP getfd), for commands that take an
// fd name, e.g. a netdev's fd=name or a socket chardev's fd address.
func (q *QMP) GetFD(ctx context.Context, name string, f *os.File) error {
	return getFD(q.Monitor(ctx, 0), name, f)
}

func (q *QMP) execute(ctx context.Context, command string, args, result any, fds []int) error {
	reply := make(chan qmpMessage, 1)
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	q.nextID++
	id := strconv.FormatUint(q.nextID, 10)
	q.pending[id] = reply
	q.mu.Unlock()
	b, err := json.Marshal(qmpRequest{Execute: command, Arguments: args, ID: id})
	if err != nil {
		q.forget(id)
		return fmt.Errorf("qmp %s: encode arguments: %w", command, err)
	}
	if err := q.send(ctx, b, fds); err != nil {
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	select {
	case m := <-reply:
		return decodeReply(command, m, result)
	case <-ctx.Done():
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	case <-q.done:
		// A reply read just before the end still counts.
		select {
		case m := <-reply:
			return decodeReply(command, m, result)
		default:
		}
		return fmt.Errorf("qmp %s: %w", command, q.Err())
	}
}

func (q *QMP) forget(id string) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

func decodeReply(command string, m qmpMessage, result any) error {
	if m.Error != nil {
		return &QMPError{Command: command, Class: m.Error.Class, Desc: m.Error.Desc}
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(m.Return, result); err != nil {
		return fmt.Errorf("qmp %s: decode reply: %w", command, err)
	}
	return nil
}

// send writes one command, with fds as SCM_RIGHTS if any, giving up when ctx
// ends (a server that does not read can fill the socket buffer).
func (q *QMP) send(ctx context.Context, b []byte, fds []int) error {
	if err := q.acquire(ctx, q.writeSem); err != nil {
		return err
	}
	defer func() { <-q.writeSem }()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := q.Err(); err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		q.conn.SetWriteDeadline(time.Unix(1, 0))
		close(fired)
	})
	n, err := q.write(b, fds)
	if !stop() {
		<-fired
		q.conn.SetWriteDeadline(time.Time{})
		if err != nil {
			err = ctx.Err()
		}
	}
	if err != nil && n > 0 {
		// Half a command would garble every later one.
		q.fail(fmt.Errorf("%w: write cut short: %v", ErrQMPClosed, err))
	}
	return err
}

// acquire takes semaphore sem unless ctx ends or the connection does first.
func (q *QMP) acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-q.done:
		return q.Err()
	}
}

func (q *QMP) write(b []byte, fds []int) (int, error) {
	if len(fds) == 0 {
		return q.conn.Write(b)
	}
	n, _, err := q.conn.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	if err == nil && n < len(b) {
		var m int
		m, err = q.conn.Write(b[n:])
		n += m
	}
	return n, err
}

// readLoop reads QEMU's messages until the connection ends, handing replies
// to their callers and events to subscribers.
func (q *QMP) readLoop() {
	dec := json.NewDecoder(q.conn)
	greeted := false
	var err error
	for {
		var m qmpMessage
		if err = dec.Decode(&m); err != nil {
			break
		}
		if !greeted {
			if m.QMP == nil {
				err = errors.New("not a QMP server: first message is not a greeting")
				break
			}
			greeted = true
			q.greeted <- m // buffered: never blocks
			continue
		}
		switch {
		case m.Event != "":
			q.dispatch(eventOf(m))
		case m.Return != nil || m.Error != nil:
			q.deliver(m)
		}
	}
	q.mu.Lock()
	if q.err == nil {
		q.err = fmt.Errorf("%w: %v", ErrQMPClosed, err)
	}
	q.pending = nil
	q.mu.Unlock()
	q.conn.Close()
	close(q.done)
}

// deliver hands a reply to the caller waiting for its id; replies to calls
// that gave up, and id-less errors (QEMU could not parse a command), are
// dropped.
func (q *QMP) deliver(m qmpMessage) {
	var id string
	if json.Unmarshal(m.ID, &id) != nil {
		return
	}
	q.mu.Lock()
	ch := q.pending[id]
	delete(q.pending, id)
	q.mu.Unlock()
	if ch != nil {
		ch <- m // buffered: never blocks
	}
}

func eventOf(m qmpMessage) Event {
	ev := Event{Name: m.Event, Data: m.Data}
	if ts := m.Timestamp; ts != nil {
		ev.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
	}
	return ev
}

// dupFiles duplicates the descriptors of files, so that sending them does
// not depend on (or change, as File.Fd would) the files' state.
func dupFiles(files []*os.File) ([]int, error) {
	fds := make([]int, 0, len(files))
	for _, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("pass %s: %w", f.Name(), err)
		}
		var nfd int
		var derr error
		if err := rc.Control(func(fd uintptr) {
			nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		}); err != nil {
			derr = err
		}
		if derr != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("pass %s: %w", f.Name(), derr)
		}
		fds = append(fds, nfd)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
