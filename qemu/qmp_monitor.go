//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
)

// Monitor is a QMP connection seen through go-qemu's qmp.Monitor
// interface, so that go-qemu's generated commands (package qmp/raw, and
// anything else written against qmp.Monitor) run over this package's
// transport. Its calls are bounded by a context and an optional per-command
// timeout; errors QEMU returns are *QMPError (class and description, named
// by command), which qmp/raw passes through unchanged.
//
// go-qemu's own qmp.SocketMonitor (at the version go.mod pins) is not the
// transport because it cannot keep this package's behaviour, and
// TestSocketMonitorShortfalls shows each point against the fake server:
//   - Run has no deadline and no context: a QEMU that stops answering (or
//     stops reading) blocks the caller, and every later caller behind its
//     mutex, for ever; only closing the connection frees them.
//   - a QMP error comes back as errors.New(desc): the class (DeviceNotFound,
//     GenericError, ...) that detaching relies on is lost.
//   - once Events has been called, events go out on one unbuffered channel
//     from the goroutine that also reads replies: a caller that does not
//     drain events blocks every command reply.
//   - replies are matched by position, not id, and lines are read with a
//     bufio.Scanner, so a reply longer than 64 KiB ends the connection.
//   - RunWithFile calls File.Fd, which turns the caller's file blocking, and
//     refuses to pass a file unless QEMU announces the "oob" capability
//     (fd passing does not need it); the greeting is read without a
//     deadline too (QEMU greets only one client per socket at a time).
//
// So DialQMP and the reader, the id matching and the event queues stay this
// package's own, and Monitor adapts them to qmp.Monitor.
type Monitor struct {
	q       *QMP
	ctx     context.Context
	timeout time.Duration
}

var _ qmp.Monitor = (*Monitor)(nil)

// Monitor returns q as a go-qemu qmp.Monitor whose every command gives up
// when ctx ends or, if timeout is positive, after timeout, whichever comes
// first. Monitors of one connection may be used at once.
func (q *QMP) Monitor(ctx context.Context, timeout time.Duration) *Monitor {
	return &Monitor{q: q, ctx: ctx, timeout: timeout}
}

// commands returns go-qemu's generated QMP commands over q, each bounded by
// ctx.
func commands(ctx context.Context, q *QMP) *raw.Monitor {
	return raw.NewMonitor(q.Monitor(ctx, 0))
}

// Connect returns nil if the connection is open, else why it ended:
// DialQMP has already read the greeting and left capabilities negotiation
// mode, which is what Connect does for go-qemu's SocketMonitor.
func (m *Monitor) Connect() error {
	if err := m.q.Err(); err != nil {
		return fmt.Errorf("qmp: %w", err)
	}
	return nil
}

// Disconnect closes the connection (for every Monitor of it).
func (m *Monitor) Disconnect() error { return m.q.Close() }

// Run executes command, a QMP command as JSON ({"execute": ...,
// "arguments": ...}, as qmp/raw builds it; an "id" member is replaced by
// the connection's own), and returns QEMU's reply as JSON ({"return":
// ...}), as qmp/raw expects. An error QEMU returns is a *QMPError; a
// command that gets no reply in time fails with the context's error, and
// its late reply is dropped.
func (m *Monitor) Run(command []byte) ([]byte, error) {
	return m.RunWithFile(command, nil)
}

// RunWithFile is Run with file, unless nil, passed to QEMU as SCM_RIGHTS
// ancillary data on the same message, as getfd and add-fd expect (the
// method of go-qemu's SocketMonitor of the same name). The caller keeps
// file, and file's mode is left alone.
func (m *Monitor) RunWithFile(command []byte, file *os.File) ([]byte, error) {
	var c struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
		ExecOOB   string          `json:"exec-oob"`
	}
	if err := json.Unmarshal(command, &c); err != nil {
		return nil, fmt.Errorf("qmp: decode command: %w", err)
	}
	if c.Execute == "" {
		if c.ExecOOB != "" {
			return nil, fmt.Errorf("qmp %s: out-of-band execution is not supported", c.ExecOOB)
		}
		return nil, errors.New("qmp: command has no execute member")
	}
	ctx := m.ctx
	if m.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.timeout)
		defer cancel()
	}
	var args any // a nil RawMessage in an interface would be sent as null
	if len(c.Arguments) > 0 && string(c.Arguments) != "null" {
		args = c.Arguments
	}
	var files []*os.File
	if file != nil {
		files = append(files, file)
	}
	var ret json.RawMessage
	if err := m.q.ExecuteWithFiles(ctx, c.Execute, args, &ret, files...); err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		Return json.RawMessage `json:"return"`
	}{ret})
}

// Events returns the events QEMU sends from this call on, in order. They
// are queued for this call as for a Subscription (up to maxQueuedEvents,
// the oldest dropped beyond), so a reader that falls behind never holds up
// command replies. The channel is closed when ctx ends, or when the
// connection has ended and the events queued before have been received;
// cancel ctx when you stop reading. Data that is not a JSON object is left
// out of the event's Data.
func (m *Monitor) Events(ctx context.Context) (<-chan qmp.Event, error) {
	if err := m.q.Err(); err != nil {
		return nil, fmt.Errorf("qmp events: %w", err)
	}
	sub := m.q.Subscribe()
	ch := make(chan qmp.Event)
	go func() {
		defer close(ch)
		defer sub.Close()
		for {
			ev, err := sub.Next(ctx)
			if err != nil {
				return
			}
			select {
			case ch <- goqemuEvent(ev):
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// goqemuEvent converts ev to go-qemu's event type.
func goqemuEvent(ev Event) qmp.Event {
	qe := qmp.Event{Event: ev.Name}
	if len(ev.Data) > 0 {
		json.Unmarshal(ev.Data, &qe.Data) // not an object: no Data
	}
	if !ev.Time.IsZero() {
		qe.Timestamp.Seconds = ev.Time.Unix()
		qe.Timestamp.Microseconds = int64(ev.Time.Nanosecond() / 1000)
	}
	return qe
}

// fileMonitor is a qmp.Monitor that can also pass a file with a command:
// *Monitor, and go-qemu's *qmp.SocketMonitor.
type fileMonitor interface {
	qmp.Monitor
	RunWithFile(command []byte, file *os.File) ([]byte, error)
}

// withFile is a qmp.Monitor whose commands carry file, so that a generated
// command of qmp/raw, which has no file parameter, can pass one.
type withFile struct {
	fileMonitor
	file *os.File
}

func (w withFile) Run(command []byte) ([]byte, error) {
	return w.RunWithFile(command, w.file)
}

// getFD passes f to QEMU under name over mon: QMP getfd, the generated
// raw.Monitor.Getfd with f attached.
func getFD(mon fileMonitor, name string, f *os.File) error {
	if f == nil {
		return fmt.Errorf("qmp getfd %s: no file", name)
	}
	return raw.NewMonitor(withFile{mon, f}).Getfd(name)
}
