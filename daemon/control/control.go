// Package control is vhostd's control socket: one JSON request per
// connection, one JSON response, so scripts can use it as easily as
// vhostctl.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
)

// Request is what a client sends: a command and, for the commands that
// change state, its argument. {"command": "ports"} is a whole request;
// {"command": "add-port", "port": {"name": "vm1", "socket": "/run/vm1.sock"}}
// and {"command": "del-port", "name": "vm1"} carry one. Fields a command
// does not take, and unknown fields, are errors (see Validate).
type Request struct {
	Command string `json:"command"`
	// Port is add-port's port, with the keys of a [[port]] table in the
	// config file.
	Port *config.Port `json:"port,omitempty"`
	// Name is del-port's port name, and trace's (optional: all ports
	// if empty).
	Name string `json:"name,omitempty"`
}

// The commands.
const (
	CmdPorts      = "ports"
	CmdStats      = "stats"
	CmdFDB        = "fdb"
	CmdAddPort    = "add-port"
	CmdDelPort    = "del-port"
	CmdDumpConfig = "dump-config"
	CmdPollers    = "pollers"
	CmdTrace      = "trace"
)

// commandArgs says which argument each command takes: "" for none.
var commandArgs = map[string]string{
	CmdPorts: "", CmdStats: "", CmdFDB: "", CmdDumpConfig: "", CmdPollers: "",
	CmdTrace:   "name?",
	CmdAddPort: "port", CmdDelPort: "name",
}

// commandList is the known commands, for errors.
const commandList = "ports, stats, pollers, fdb, trace, add-port, del-port, dump-config"

// Validate checks a request's shape: a known command with the argument it
// takes and no other. What the argument says (is the port's name free,
// are its features known) is checked by the daemon, by the rules of the
// config file.
func (r *Request) Validate() error {
	arg, ok := commandArgs[r.Command]
	if !ok {
		return fmt.Errorf("unknown command %q (known: %s)", r.Command, commandList)
	}
	if r.Port != nil && arg != "port" {
		return fmt.Errorf("%s takes no \"port\"", r.Command)
	}
	if r.Name != "" && arg != "name" && arg != "name?" {
		return fmt.Errorf("%s takes no \"name\"", r.Command)
	}
	switch arg {
	case "port":
		switch {
		case r.Port == nil:
			return fmt.Errorf(`%s needs "port": {"name": NAME, "socket": PATH, ...} (the keys of a [[port]] in the config file)`, r.Command)
		case r.Port.Name == "":
			return fmt.Errorf(`%s: the port has no "name"`, r.Command)
		case r.Port.Socket == "":
			return fmt.Errorf(`%s: port %q has no "socket" path`, r.Command, r.Port.Name)
		}
	case "name":
		if r.Name == "" {
			return fmt.Errorf(`%s needs "name": the port's name`, r.Command)
		}
	}
	return nil
}

// DecodeRequest reads one request and validates it. Unknown fields are
// errors, so that a misspelt setting is not silently left at its default.
func DecodeRequest(r io.Reader) (Request, error) {
	var req Request
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("bad request: %w", err)
	}
	if err := req.Validate(); err != nil {
		return req, fmt.Errorf("bad request: %w", err)
	}
	return req, nil
}

// Response is what the daemon answers.
type Response struct {
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// PortInfo describes one port for `vhostctl ports`.
type PortInfo struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	State string `json:"state"` // listening (server mode) or connecting (client mode), connected, running; up, down or unknown for the uplink
	// Pollers are the pollers that receive from the port: one per lane
	// (a multi-queue VM port has one lane per poller, up to its queue
	// pairs).
	Pollers []int `json:"pollers"`
	// MAC is the port's configured source address: an address, "learn"
	// (the first one its guest sends, per frontend connection), or empty
	// for any. LockedMAC is the address in force: the configured one, or
	// the one a "learn" port locked to; empty if none.
	MAC       string `json:"mac,omitempty"`
	LockedMAC string `json:"locked_mac,omitempty"`
	// MaxMACs is how many addresses the port may make the switch learn;
	// LearnedMACs how many it has (pinned addresses not counted).
	MaxMACs     int          `json:"max_macs"`
	LearnedMACs int          `json:"learned_macs"`
	Vhost       vhost.Status `json:"vhost"`
	Uplink      *UplinkInfo  `json:"uplink,omitempty"` // the DPDK uplink only
}

// PortStats is one port's counters for `vhostctl stats`.
type PortStats struct {
	Name string `json:"name"`
	vswitch.Snapshot
	DPDK *DPDKStats `json:"dpdk,omitempty"` // the DPDK uplink's device counters
	// Queues are a VM port's counters per queue (see
	// vswitch.VMPort.QueueStats).
	Queues []vswitch.QueueSnapshot `json:"queues,omitempty"`
}

// PollerStats is one poller's load for `vhostctl pollers`: where its
// thread's time went since it started, and what it moved. Times are TSC
// cycles (see switch/tsc), also given in seconds at TSCHz.
type PollerStats struct {
	Poller int      `json:"poller"`
	Ports  []string `json:"ports"` // ports with a receiver on the poller
	// BusyCycles is spent in passes of the poller's loop that moved
	// frames, IdleCycles in the others (empty polls, idle spin, sleep).
	BusyCycles  uint64  `json:"busy_cycles"`
	IdleCycles  uint64  `json:"idle_cycles"`
	BusySeconds float64 `json:"busy_seconds"`
	IdleSeconds float64 `json:"idle_seconds"`
	// Frames were taken from the poller's receivers in Bursts busy
	// passes; BusyCycles/Frames is the poller's cost per frame.
	Frames uint64 `json:"frames"`
	Bursts uint64 `json:"bursts"`
	// TSCHz is the rate the cycles were converted at: the TSC measured
	// against the monotonic clock since vhostd started.
	TSCHz float64 `json:"tsc_hz"`
	// CPU is the CPU the poller is pinned to (poller_cpus), -1 if none.
	CPU int `json:"cpu"`
	// TID is the poller's thread id, 0 while it does not run.
	TID int `json:"tid"`
	// Preempted is how often the kernel took the poller's CPU for
	// another thread since the thread started (its nonvoluntary context
	// switches): each time, the frames in its rings wait. Near 0 on a
	// CPU of its own.
	Preempted uint64 `json:"preempted"`
}

// FDBEntry is one learned address for `vhostctl fdb`.
type FDBEntry = vswitch.LearnedMAC

// Handler answers commands.
type Handler interface {
	Ports() []PortInfo
	Stats() []PortStats
	Pollers() []PollerStats
	FDB() []FDBEntry
	// AddPort adds a VM port, as a [[port]] of the config file at start.
	AddPort(config.Port) error
	// DelPort deletes the named VM port, dropping its frontend.
	DelPort(name string) error
	// Config returns the running configuration.
	Config() config.Config
	// Trace subscribes to the vhost-user trace of the named VM port, or
	// of every VM port if name is empty (see vhost.Server.Trace).
	Trace(name string) ([]PortTrace, error)
}

// PortTrace is one port's trace subscription.
type PortTrace struct {
	Port string
	Sub  *vhost.TraceSub
}

// TraceStart is the first line of trace's answer: the ports traced.
// Events follow, one vhost.TraceEvent (with its port) per line, until
// the client closes the connection.
type TraceStart struct {
	Ports []string `json:"ports"`
}

// PortChange is add-port's and del-port's result.
type PortChange struct {
	Port string `json:"port"`
	// StateFile is the state file the change was written to, if any.
	StateFile string `json:"state_file,omitempty"`
}

// Server serves the control socket.
type Server struct {
	ln     *net.UnixListener
	remove func() error // unlinks the socket's path if still ours
	h      Handler
	log    *logrus.Entry
	wg     sync.WaitGroup

	streamMu sync.Mutex
	streams  map[*net.UnixConn]bool // trace connections, ended by Close
	closing  bool
}

// Listen creates the control socket at path (replacing a stale one) with
// mode 0660.
func Listen(path string, h Handler, log *logrus.Entry) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another vhostd is using it; stop it or pass --control", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// Made with its mode before it appears at path: a socket bound at
	// path and chmod-ed after would take connections with the umask's
	// permissions in between.
	ln, remove, err := vhost.ListenUnix(path, vhost.SocketPerm{Mode: 0o660})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{ln: ln, remove: remove, h: h, log: log}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Close stops serving and removes the socket (if it is still ours).
func (s *Server) Close() error {
	err := s.ln.Close()
	s.closeStreams()
	s.wg.Wait()
	return errors.Join(err, s.remove())
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(requestTimeout))
	var resp Response
	req, err := DecodeRequest(c)
	if err == nil && req.Command == CmdTrace {
		s.streamTrace(c, req.Name)
		return
	}
	if err != nil {
		resp.Error = err.Error()
	} else {
		v, err := s.do(req)
		if err == nil {
			resp.Result, err = json.Marshal(v)
		}
		if err != nil {
			resp.Error = err.Error()
		}
	}
	if err := json.NewEncoder(c).Encode(&resp); err != nil {
		s.log.WithError(err).Debug("control reply")
	}
}

// requestTimeout bounds one request, answer included. Deleting a port
// waits for its frontend's teardown, well within it.
const requestTimeout = 10 * time.Second

// do carries out a valid request.
func (s *Server) do(req Request) (any, error) {
	switch req.Command {
	case CmdPorts:
		return s.h.Ports(), nil
	case CmdStats:
		return s.h.Stats(), nil
	case CmdPollers:
		return s.h.Pollers(), nil
	case CmdFDB:
		return s.h.FDB(), nil
	case CmdDumpConfig:
		return s.h.Config(), nil
	case CmdAddPort:
		if err := s.h.AddPort(*req.Port); err != nil {
			return nil, err
		}
		return PortChange{Port: req.Port.Name, StateFile: s.h.Config().StateFile}, nil
	case CmdDelPort:
		if err := s.h.DelPort(req.Name); err != nil {
			return nil, err
		}
		return PortChange{Port: req.Name, StateFile: s.h.Config().StateFile}, nil
	}
	return nil, fmt.Errorf("unknown command %q (known: %s)", req.Command, commandList)
}

// Call sends one command without argument to the daemon at path and
// decodes its result into out.
func Call(ctx context.Context, path, command string, out any) error {
	return Do(ctx, path, Request{Command: command}, out)
}

// Do sends req to the daemon at path and decodes its result into out
// (nil: the result is not wanted). req is validated first, as the daemon
// will.
func Do(ctx context.Context, path string, req Request, out any) error {
	return DoRaw(ctx, path, req, req, out)
}

// DoRaw is Do that sends wire, req's JSON form, in place of req: a client
// may add to a request what its own Request cannot say (a setting the
// daemon knows and it does not). req is validated.
func DoRaw(ctx context.Context, path string, req Request, wire any, out any) error {
	if err := req.Validate(); err != nil {
		return err
	}
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(wire); err != nil {
		return fmt.Errorf("send %s: %w", req.Command, err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return fmt.Errorf("read reply to %s: %w", req.Command, err)
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Result, out); err != nil {
		return fmt.Errorf("reply to %s: %w", req.Command, err)
	}
	return nil
}

// dial connects to the daemon's control socket at path.
func dial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to vhostd at %s: %w (is vhostd running? pass --control PATH)", path, err)
	}
	return c, nil
}
