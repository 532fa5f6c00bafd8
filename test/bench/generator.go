package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/vhostd/vhostd/test/testpmd"
)

// The generator's port MACs: each port addresses the other, so a learning
// switch learns both and never floods once the loop runs.
const (
	macA = "02:00:00:00:00:0a"
	macB = "02:00:00:00:00:0b"
)

// Generator is dpdk-testpmd as the traffic generator: two net_virtio_user
// ports (a real virtio driver, as in a guest) in LAB.md's closed loop:
// "mac" forwarding seeded by "start tx_first", so whatever the backend
// delivers on one port is sent straight back to the other and the
// backend's rings stay full.
type Generator struct {
	tp *testpmd.TestPMD
}

// StartGenerator starts the generator on env's sockets, confined to cpu
// (--lcores 0@cpu,1@cpu: the CLI lcore and one forwarding lcore), and
// waits for both links. server makes its vdevs socket servers, for
// backends that connect as clients (OVS).
func StartGenerator(ctx context.Context, env RunEnv, cpu int, server bool) (*Generator, error) {
	mrg := env.Case.MrgRxbuf
	port := func(sock, mac string) testpmd.Port {
		return testpmd.Port{Socket: sock, MAC: mac, Server: server, MrgRxbuf: &mrg, Queues: max(env.Case.Queues, 1)}
	}
	cfg := testpmd.Config{
		Ports:    []testpmd.Port{port(env.SockA(), macA), port(env.SockB(), macB)},
		PeerMACs: []string{macB, macA},
		TxPkts:   env.Case.TxPkts(),
		CPUs:     strconv.Itoa(cpu),
		LogFile:  env.Log("generator"),
	}
	// A server-mode generator blocks in its port probe until the backend
	// has connected (OVS retries once a second): allow for that.
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tp, err := testpmd.Start(sctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("generator: %w", err)
	}
	env.Tracker.AddPID("dpdk-testpmd (generator)", tp.Pid())
	env.Tracker.AddPrefix(tp.FilePrefix())
	g := &Generator{tp: tp}
	if err := tp.WaitLinksUp(sctx); err != nil {
		g.Close()
		return nil, fmt.Errorf("generator: %w", err)
	}
	return g, nil
}

// Pid is the generator's process id.
func (g *Generator) Pid() int { return g.tp.Pid() }

// LoopOptions times one closed-loop run.
type LoopOptions struct {
	// SeedBursts is N of "start tx_first N" (bursts of 32 frames per
	// port; what does not fit the rings is dropped by testpmd).
	SeedBursts int
	// Warmup is skipped before the measured window; Window is its length.
	Warmup, Window time.Duration
	// Every is the sampling interval of the rate-over-time series.
	Every time.Duration
}

// RunLoop seeds the closed loop and samples the total RX counter of both
// ports every opt.Every from the seed until the window is covered: it
// starts at the first sample at or after Warmup and ends at the first
// sample Window later (so a slow stats answer delays the window rather than
// shortening it). Each sample's time is the midpoint of its "show port
// stats all" round trip, relative to the moment tx_first returned.
// Forwarding keeps running; call StopLoop.
func (g *Generator) RunLoop(ctx context.Context, opt LoopOptions) ([]Sample, error) {
	if err := g.tp.StartClosedLoop(ctx, opt.SeedBursts); err != nil {
		return nil, fmt.Errorf("generator: %w", err)
	}
	t0 := time.Now()
	winStart := -1.0
	var ss []Sample
	for k := 0; ; k++ {
		a := time.Now()
		st, err := g.tp.Stats(ctx)
		if err != nil {
			return ss, fmt.Errorf("generator: %w", err)
		}
		b := time.Now()
		var rx uint64
		for _, p := range st {
			rx += p.RxPackets
		}
		t := (a.Sub(t0) + b.Sub(a)/2).Seconds()
		ss = append(ss, Sample{T: t, RxPackets: rx})
		if winStart < 0 && t >= opt.Warmup.Seconds() {
			winStart = t
		}
		if winStart >= 0 && t >= winStart+opt.Window.Seconds() {
			return ss, nil
		}
		// Tick on a fixed grid from t0, so a slow answer does not shift
		// every later sample.
		next := t0.Add(time.Duration(k+1) * opt.Every)
		for !next.After(time.Now()) {
			k++
			next = t0.Add(time.Duration(k+1) * opt.Every)
		}
		select {
		case <-ctx.Done():
			return ss, ctx.Err()
		case <-time.After(time.Until(next)):
		}
	}
}

// StopLoop stops forwarding: no more frames leave the generator.
func (g *Generator) StopLoop(ctx context.Context) error {
	_, err := g.tp.Stop(ctx)
	return err
}

// Close quits the generator; the testpmd package removes its runtime
// directory and its server sockets.
func (g *Generator) Close() error { return g.tp.Close() }
