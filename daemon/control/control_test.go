package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
)

// TestDecodeRequest: requests are checked like vhost-user messages: the
// old argument-less form still works, and a request that is malformed,
// misspelt or lacks what its command needs is refused with words that say
// what to fix.
func TestDecodeRequest(t *testing.T) {
	good := []struct {
		in   string
		want Request
	}{
		{`{"command":"ports"}`, Request{Command: "ports"}},
		{`{"command":"stats"}`, Request{Command: "stats"}},
		{`{"command":"fdb"}`, Request{Command: "fdb"}},
		{`{"command":"dump-config"}`, Request{Command: "dump-config"}},
		{`{"command":"del-port","name":"vm1"}`, Request{Command: "del-port", Name: "vm1"}},
		{`{"command":"add-port","port":{"name":"vm1","socket":"/run/vm1.sock","disable_features":["mrg_rxbuf"],"queue_pairs":2,"mac":"learn","max_macs":5,"owner":"root","group":"kvm","mode":"0660"}}`,
			Request{Command: "add-port", Port: &config.Port{Name: "vm1", Socket: "/run/vm1.sock", DisableFeatures: []string{"mrg_rxbuf"}, QueuePairs: 2,
				MAC: "learn", MaxMACs: 5, Owner: "root", Group: "kvm", Mode: "0660"}}},
	}
	for _, c := range good {
		got, err := DecodeRequest(strings.NewReader(c.in))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []struct{ in, want string }{
		{``, "bad request: EOF"},
		{`{"command":`, "bad request"},
		{`["ports"]`, "bad request"},
		{`{"command":"frobnicate"}`, `unknown command "frobnicate" (known: ports, stats, pollers, fdb, trace, add-port, del-port, dump-config)`},
		{`{}`, `unknown command ""`},
		{`{"command":"ports","verbose":true}`, `unknown field "verbose"`},
		{`{"command":"ports","name":"vm1"}`, `ports takes no "name"`},
		{`{"command":"del-port","port":{"name":"vm1","socket":"/s"}}`, `del-port takes no "port"`},
		{`{"command":"del-port"}`, `del-port needs "name"`},
		{`{"command":"del-port","name":""}`, `del-port needs "name"`},
		{`{"command":"add-port"}`, `add-port needs "port"`},
		{`{"command":"add-port","name":"vm1"}`, `add-port takes no "name"`},
		{`{"command":"add-port","port":{"socket":"/s"}}`, `the port has no "name"`},
		{`{"command":"add-port","port":{"name":"vm1"}}`, `port "vm1" has no "socket" path`},
		{`{"command":"add-port","port":{"name":"vm1","socket":"/s","queues":2}}`, `unknown field "queues"`},
		{`{"command":"add-port","port":{"name":"vm1","socket":"/s","queue_pairs":"two"}}`, "bad request"},
		{`{"command":"add-port","port":{"name":"vm1","socket":"/s","mode":432}}`, "bad request"},
	}
	for _, c := range bad {
		_, err := DecodeRequest(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.in, err, c.want)
		}
	}
}

// recorder is a Handler that records the ports it is given.
type recorder struct {
	added   []config.Port
	deleted []string
	cfg     config.Config
}

func (r *recorder) Ports() []PortInfo                 { return nil }
func (r *recorder) Stats() []PortStats                { return nil }
func (r *recorder) FDB() []FDBEntry                   { return nil }
func (r *recorder) Pollers() []PollerStats            { return nil }
func (r *recorder) Trace(string) ([]PortTrace, error) { return nil, errors.New("fake: no trace") }
func (r *recorder) Config() config.Config             { return r.cfg }
func (r *recorder) AddPort(p config.Port) error {
	if p.Name == "refused" {
		return errors.New("port refused: no")
	}
	r.added = append(r.added, p)
	return nil
}
func (r *recorder) DelPort(name string) error {
	r.deleted = append(r.deleted, name)
	return nil
}

// TestServerPassesPortsThrough: a whole config.Port reaches the handler
// as the client sent it, the handler's error reaches the client, and
// dump-config answers the handler's configuration.
func TestServerPassesPortsThrough(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	l := logrus.New()
	l.SetOutput(io.Discard)
	h := &recorder{cfg: config.Default()}
	h.cfg.StateFile = "/var/lib/vhostd/state.toml"
	h.cfg.Ports = []config.Port{{Name: "a", Socket: "/run/a.sock", Mode: "0600"}}
	s, err := Listen(ctl, h, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	p := config.Port{Name: "vm1", Socket: "/run/vm1.sock", DisableFeatures: []string{"mrg_rxbuf", "event_idx"}, QueuePairs: 4,
		MAC: "02:00:00:00:00:0a", MaxMACs: 9, Owner: "qemu", Group: "kvm", Mode: "0660"}
	var res PortChange
	if err := Do(ctx, ctl, Request{Command: CmdAddPort, Port: &p}, &res); err != nil {
		t.Fatal(err)
	}
	if len(h.added) != 1 || !reflect.DeepEqual(h.added[0], p) {
		t.Errorf("handler got %+v, want %+v", h.added, p)
	}
	if res != (PortChange{Port: "vm1", StateFile: h.cfg.StateFile}) {
		t.Errorf("add-port result %+v", res)
	}
	if err := Do(ctx, ctl, Request{Command: CmdAddPort, Port: &config.Port{Name: "refused", Socket: "/s"}}, nil); err == nil || err.Error() != "port refused: no" {
		t.Errorf("refused add-port: %v", err)
	}
	if err := Do(ctx, ctl, Request{Command: CmdDelPort, Name: "vm1"}, &res); err != nil || len(h.deleted) != 1 || h.deleted[0] != "vm1" {
		t.Errorf("del-port: %v, handler got %v", err, h.deleted)
	}
	var c config.Config
	if err := Call(ctx, ctl, CmdDumpConfig, &c); err != nil || !reflect.DeepEqual(c, h.cfg) {
		t.Errorf("dump-config: %+v, %v; want %+v", c, err, h.cfg)
	}
	// The client checks what it sends, as the daemon does.
	if err := Do(ctx, ctl, Request{Command: CmdDelPort}, nil); err == nil || !strings.Contains(err.Error(), "needs") {
		t.Errorf("del-port without a name: %v", err)
	}
	// A raw request that a script writes, with a field this daemon does
	// not know, is refused by name.
	raw := map[string]any{"command": "add-port", "port": map[string]any{"name": "x", "socket": "/x", "colour": "red"}}
	if err := DoRaw(ctx, ctl, Request{Command: CmdAddPort, Port: &config.Port{Name: "x", Socket: "/x"}}, raw, nil); err == nil || !strings.Contains(err.Error(), `unknown field "colour"`) {
		t.Errorf("unknown field: %v", err)
	}
	var b json.RawMessage
	if err := Call(ctx, ctl, CmdPorts, &b); err != nil || string(b) != "null" {
		t.Errorf("ports: %s, %v", b, err)
	}
}
