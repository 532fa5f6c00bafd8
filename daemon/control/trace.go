package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/vhostd/vhostd/vhost"
)

// streamTrace answers trace: a TraceStart line, then the ports' events,
// one a line, until the client closes the connection or the server
// closes. A client that reads slowly loses events (each event says how
// many its port's subscription lost); the ports never wait for it.
func (s *Server) streamTrace(c *net.UnixConn, name string) {
	subs, err := s.h.Trace(name)
	if err != nil {
		json.NewEncoder(c).Encode(&Response{Error: err.Error()})
		return
	}
	defer func() {
		for _, p := range subs {
			p.Sub.Close()
		}
	}()
	start := TraceStart{Ports: []string{}}
	for _, p := range subs {
		start.Ports = append(start.Ports, p.Port)
	}
	res, _ := json.Marshal(start)
	c.SetDeadline(time.Time{}) // a trace runs as long as its client wants
	enc := json.NewEncoder(c)
	if err := enc.Encode(&Response{Result: res}); err != nil {
		return
	}
	if !s.track(c) {
		return
	}
	defer s.untrack(c)

	// The client says nothing more: its read ends when it closes (or
	// the server closes c).
	gone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(gone)
	}()
	var mu sync.Mutex // one event a line, whole
	var wg sync.WaitGroup
	failed := make(chan struct{})
	var failOnce sync.Once
	for _, p := range subs {
		wg.Add(1)
		go func(port string, sub *vhost.TraceSub) {
			defer wg.Done()
			for e := range sub.C {
				e.Port = port
				mu.Lock()
				err := enc.Encode(&e)
				mu.Unlock()
				if err != nil {
					failOnce.Do(func() { close(failed) })
					return
				}
			}
		}(p.Port, p.Sub)
	}
	select {
	case <-gone:
	case <-failed:
	}
	c.Close()
	for _, p := range subs {
		p.Sub.Close() // ends the goroutines above
	}
	wg.Wait()
}

// track records a streaming connection for Close to end; false if the
// server is closing.
func (s *Server) track(c *net.UnixConn) bool {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.closing {
		return false
	}
	if s.streams == nil {
		s.streams = map[*net.UnixConn]bool{}
	}
	s.streams[c] = true
	return true
}

func (s *Server) untrack(c *net.UnixConn) {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	delete(s.streams, c)
}

// closeStreams ends every streaming connection.
func (s *Server) closeStreams() {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	s.closing = true
	for c := range s.streams {
		c.Close()
	}
}

// ReadTrace reads trace's answer from r: the start line (an error if the
// daemon refused), then calls each for every event until r ends or each
// returns an error.
func ReadTrace(r io.Reader, start func(TraceStart) error, each func(vhost.TraceEvent) error) error {
	dec := json.NewDecoder(r)
	var resp Response
	if err := dec.Decode(&resp); err != nil {
		return err
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	var st TraceStart
	if err := json.Unmarshal(resp.Result, &st); err != nil {
		return err
	}
	if err := start(st); err != nil {
		return err
	}
	for {
		var e vhost.TraceEvent
		if err := dec.Decode(&e); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := each(e); err != nil {
			return err
		}
	}
}

// Trace asks the daemon at path for the trace of the named port (all VM
// ports if empty) and calls start, then each for every event, until ctx
// is done (not an error), the daemon ends the stream, or a callback
// returns an error.
func Trace(ctx context.Context, path, name string, start func(TraceStart) error, each func(vhost.TraceEvent) error) error {
	req := Request{Command: CmdTrace, Name: name}
	if err := req.Validate(); err != nil {
		return err
	}
	c, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fmt.Errorf("send trace: %w", err)
	}
	err = ReadTrace(c, start, each)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
