// Package control is vhostd's control socket: one JSON request per
// connection, one JSON response, so scripts can use it as easily as
// vhostctl.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
)

// Request is what a client sends.
type Request struct {
	Command string `json:"command"` // ports, fdb or stats
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
}

// FDBEntry is one learned address for `vhostctl fdb`.
type FDBEntry = vswitch.LearnedMAC

// Handler answers commands.
type Handler interface {
	Ports() []PortInfo
	Stats() []PortStats
	FDB() []FDBEntry
}

// Server serves the control socket.
type Server struct {
	ln  *net.UnixListener
	h   Handler
	log *logrus.Entry
	wg  sync.WaitGroup
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
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{ln: ln, h: h, log: log}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
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
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var req Request
	var resp Response
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		resp.Error = fmt.Sprintf("bad request: %v", err)
	} else {
		var v any
		switch req.Command {
		case "ports":
			v = s.h.Ports()
		case "stats":
			v = s.h.Stats()
		case "fdb":
			v = s.h.FDB()
		default:
			resp.Error = fmt.Sprintf("unknown command %q (known: ports, stats, fdb)", req.Command)
		}
		if v != nil {
			b, err := json.Marshal(v)
			if err != nil {
				resp.Error = err.Error()
			}
			resp.Result = b
		}
	}
	if err := json.NewEncoder(c).Encode(&resp); err != nil {
		s.log.WithError(err).Debug("control reply")
	}
}

// Call sends one command to the daemon at path and decodes its result into
// out.
func Call(ctx context.Context, path, command string, out any) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("connect to vhostd at %s: %w (is vhostd running? pass --control PATH)", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(Request{Command: command}); err != nil {
		return fmt.Errorf("send %s: %w", command, err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return fmt.Errorf("read reply to %s: %w", command, err)
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	return json.Unmarshal(resp.Result, out)
}
